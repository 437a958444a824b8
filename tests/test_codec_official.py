"""Our loader + transformers' Xcodec2Model against the official xcodec2==0.1.5 package.

scripts/install.sh installs the package in a folder of its own (llasa.codec.official.OFFICIAL_SITE).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import Wav2Vec2BertConfig, Xcodec2Config

from llasa.codec import CheckpointError, Codec, loading
from llasa.codec.official import build_official_model, import_official, released_key_names

try:
    import_official()
except ImportError as error:
    pytest.skip(f"official xcodec2 package not importable ({error}); see scripts/install.sh", allow_module_level=True)
from llasa.codec.testing import randomize_weights

# the official architecture shrunk through its own constructor arguments; w2v-BERT keeps
# 16 layers because the official model reads hidden_states[16]
SMALL = dict(
    hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
    head_dim=64, encoder_hidden_size=8, quantization_dim=192,
)


def small_config() -> Xcodec2Config:
    semantic = Wav2Vec2BertConfig(
        hidden_size=64, num_hidden_layers=16, num_attention_heads=2, intermediate_size=128, output_hidden_size=64
    )
    return Xcodec2Config(semantic_model_config=semantic, **SMALL)


def speech_like(num_samples: int, seed: int = 0) -> np.ndarray:
    t = np.arange(num_samples) / 16000
    noise = np.random.RandomState(seed).randn(num_samples)
    return (0.3 * np.sin(2 * np.pi * 180 * t * (1 + t)) + 0.02 * noise).astype(np.float32)


def save_original(directory, official, config: Xcodec2Config, *, released_names: bool) -> None:
    state = {k: v.contiguous() for k, v in official.state_dict().items()}
    save_file(released_key_names(state) if released_names else state, str(directory / "model.safetensors"))
    config.save_pretrained(directory)  # sizes of the shrunk model (the official config.json has none)


def assert_equivalent(official, codec: Codec, wav: np.ndarray) -> None:
    ours = codec.encode(wav)
    with torch.no_grad():
        theirs = official.encode_code(torch.from_numpy(wav)[None])[0, 0].numpy()
        their_audio = official.decode_code(torch.from_numpy(ours)[None, None])[0, 0].numpy()
    assert len(np.unique(ours)) > 5, "weights too degenerate for a meaningful comparison"
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_allclose(codec.decode(ours), their_audio, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def official_small():
    return randomize_weights(build_official_model(small_config(), seed=0), seed=1)


@pytest.mark.parametrize("released_names", [False, True], ids=["package-names", "released-names"])
def test_original_layout_matches_official(tmp_path, official_small, released_names):
    save_original(tmp_path, official_small, small_config(), released_names=released_names)
    codec = Codec.from_pretrained(tmp_path)
    assert_equivalent(official_small, codec, speech_like(16000 + 160))  # N % 320 == 160
    assert_equivalent(official_small, codec, speech_like(320 * 40, seed=2))  # exact multiple: extra frame


def test_without_the_beta_rename_loading_fails_loudly(tmp_path, official_small, monkeypatch):
    """Control: without the act.bias -> act.beta rule the loader must refuse, naming the keys
    (the official package's bug was the mirror image: a renamed beta silently left at init)."""
    save_original(tmp_path, official_small, small_config(), released_names=False)
    rules = [rule for rule in loading.ORIGINAL_KEY_RULES if "act" not in rule[0]]
    assert len(rules) == len(loading.ORIGINAL_KEY_RULES) - 1
    monkeypatch.setattr(loading, "ORIGINAL_KEY_RULES", rules)
    with pytest.raises(CheckpointError, match=r"missing: .*act\.beta.*unexpected: .*act\.bias"):
        Codec.from_pretrained(tmp_path)


@pytest.mark.slow
def test_full_official_config_matches(tmp_path):
    """Released sizes, 24-layer w2v-BERT (layers 16+ must be dropped), original config.json."""
    import json

    semantic = Wav2Vec2BertConfig(num_hidden_layers=24).to_dict()  # w2v-bert-2.0's architecture
    official = randomize_weights(
        build_official_model(Xcodec2Config(semantic_model_config=semantic), seed=0), seed=1
    )
    state = {k: v.contiguous() for k, v in official.state_dict().items()}
    assert any(k.startswith("semantic_model.encoder.layers.23.") for k in state)
    save_file(released_key_names(state), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "xcodec2", "semantic_hidden_size": 1024, "codec_encoder_hidden_size": 1024,
        "codec_decoder_hidden_size": 1024, "use_vocos": True,
    }))
    codec = Codec.from_pretrained(tmp_path)
    assert codec.codebook_size == 65536
    assert_equivalent(official, codec, speech_like(16000 * 2 + 77))
