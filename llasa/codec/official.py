"""The official `xcodec2==0.1.5` package, built offline, as a reference for equivalence tests
and benchmarks (never used to encode or decode in llasa itself).

The package pins torch 2.5 and torchaudio, and its model downloads w2v-BERT 2.0 in its
constructor. `scripts/install.sh` installs it without dependencies into a folder of its own
(``OFFICIAL_SITE``), which :func:`import_official` puts on the path; `build_official_model`
then constructs it with random weights and no network access.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path
from unittest import mock

import torch
from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel, Xcodec2Config

# Kept out of site-packages: the package's pins (torch 2.5, torchaudio, torchao) would make the
# environment inconsistent for pip. A checkout's build/official unless LLASA_OFFICIAL_SITE says.
OFFICIAL_SITE = Path(os.environ.get("LLASA_OFFICIAL_SITE", Path(__file__).resolve().parents[2] / "build" / "official"))


def _use_official_site() -> None:
    if OFFICIAL_SITE.is_dir() and str(OFFICIAL_SITE) not in sys.path:
        sys.path.append(str(OFFICIAL_SITE))


def _torchtune_rope_only() -> dict[str, types.ModuleType]:
    """Stand-ins for `torchtune` and `torchtune.modules` holding just RotaryPositionalEmbeddings.

    xcodec2 uses nothing else from torchtune, whose package import needs torchao, omegaconf,
    sentencepiece, ...; torchao in the environment would also be imported by every
    `import transformers` (its quantizer integration), costing everyone time and log noise.
    """
    _use_official_site()
    spec = importlib.util.find_spec("torchtune")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'torchtune' (pip install --no-deps torchtune==0.6.1)")
    path = Path(spec.submodule_search_locations[0]) / "modules" / "position_embeddings.py"
    loader = importlib.util.spec_from_file_location("torchtune.modules.position_embeddings", path)
    rope = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(rope)
    package, modules = types.ModuleType("torchtune"), types.ModuleType("torchtune.modules")
    modules.RotaryPositionalEmbeddings = rope.RotaryPositionalEmbeddings
    package.modules = modules
    return {"torchtune": package, "torchtune.modules": modules}


def import_official() -> types.ModuleType:
    """`xcodec2.modeling_xcodec2`, imported without torchaudio (imported there, never used)
    and without torchtune's package."""
    import transformers  # noqa: F401  (must initialise before the stubs exist: it inspects torchaudio)

    if "xcodec2.modeling_xcodec2" in sys.modules:
        return sys.modules["xcodec2.modeling_xcodec2"]
    _use_official_site()
    stubs = {"torchaudio": types.ModuleType("torchaudio"), **_torchtune_rope_only()}
    stubs = {name: module for name, module in stubs.items() if name not in sys.modules}
    sys.modules.update(stubs)
    try:
        return importlib.import_module("xcodec2.modeling_xcodec2")
    finally:
        for name in stubs:
            del sys.modules[name]


def _offline(factory):
    return types.SimpleNamespace(from_pretrained=lambda *args, **kwargs: factory())


def build_official_model(config: Xcodec2Config, *, seed: int = 0) -> torch.nn.Module:
    """The official XCodec2Model with the sizes of `config` (FSQ levels 4^8 are fixed there).

    The official model takes its sizes from hard-coded defaults, so smaller configs swap in
    the package's own classes built with the smaller sizes.
    """
    if list(config.quantization_levels) != [4] * 8 or config.hop_length != 320:
        raise ValueError("the official package fixes FSQ levels [4]*8 and hop 320")
    official = import_official()
    from xcodec2.vq.codec_decoder_vocos import CodecDecoderVocos
    from xcodec2.vq.codec_encoder import CodecEncoder_Transformer
    from xcodec2.vq.module import SemanticEncoder

    semantic = config.semantic_model_config.to_dict()
    semantic_config = Wav2Vec2BertConfig(
        **{**semantic, "apply_spec_augment": False, "layerdrop": 0.0, "output_hidden_states": True}
    )
    if semantic_config.num_hidden_layers < 16:
        raise ValueError("the official model reads hidden_states[16]: its w2v-BERT needs at least 16 layers")
    width, semantic_width = config.hidden_size, semantic_config.hidden_size
    if config.intermediate_size != 4 * width or config.head_dim * config.num_attention_heads != width:
        raise ValueError("the official decoder has intermediate_size = 4 * hidden_size and head_dim * heads = hidden_size")
    sizes = dict(
        Wav2Vec2BertModel=_offline(lambda: Wav2Vec2BertModel(semantic_config)),
        AutoFeatureExtractor=_offline(
            lambda: SeamlessM4TFeatureExtractor(
                feature_size=80, num_mel_bins=80, sampling_rate=16000, stride=2, padding_value=1.0
            )
        ),
        SemanticEncoder=lambda *args: SemanticEncoder(semantic_width, semantic_width, semantic_width),
        CodecEncoder_Transformer=functools.partial(
            CodecEncoder_Transformer, ngf=config.encoder_hidden_size, up_ratios=list(config.downsampling_ratios),
            hidden_dim=width,
        ),
        CodecDecoderVocos=functools.partial(
            CodecDecoderVocos, hidden_dim=width, depth=config.num_hidden_layers, heads=config.num_attention_heads,
            vq_dim=width + semantic_width,
        ),
    )
    with torch.random.fork_rng(devices=[]), mock.patch.multiple(official, **sizes):
        torch.manual_seed(seed)
        model = official.XCodec2Model(official.BigCodecConfig())
        model.fc_prior = torch.nn.Linear(width + semantic_width, width + semantic_width)
        model.fc_post_a = torch.nn.Linear(width + semantic_width, width)
    return model.eval()


def released_key_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The package's key names -> those of the released checkpoint (`weight_g/_v`, `act.beta`)."""
    renames = ((".parametrizations.weight.original0", ".weight_g"), (".parametrizations.weight.original1", ".weight_v"),
               (".act.bias", ".act.beta"))
    out = {}
    for key, value in state.items():
        for old, new in renames:
            if key.endswith(old):
                key = key[: -len(old)] + new
        out[key] = value
    return out
