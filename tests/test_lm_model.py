"""Model presets, saving/loading tied and untied heads, vocabulary checks."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from llasa.lm.model import build_model, check_vocabulary, llama_config, load, save
from llasa.lm.vocab import SpeechVocab, build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(None, 256)


def non_embedding_params(config) -> int:
    h, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    return layers * (h * q * 2 + h * kv * 2 + 3 * h * f + 2 * h) + h


@pytest.mark.parametrize(
    "preset, hidden, layers, heads, kv, tied",
    [("1b", 2048, 16, 32, 8, True), ("3b", 3072, 28, 24, 8, False), ("8b", 4096, 32, 32, 8, False)],
)
def test_official_shapes(tokenizer, preset, hidden, layers, heads, kv, tied):
    config = llama_config(preset, tokenizer)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (
        hidden, layers, heads, kv,
    )  # fmt: skip
    assert config.tie_word_embeddings is tied
    assert config.rope_parameters["rope_type"] == "llama3" and config.rope_parameters["rope_theta"] == 500000.0
    assert config.vocab_size == len(tokenizer)


def test_llasa_3b_parameter_count_matches_checkpoint_size(tokenizer):
    # spec §2.2: 3B shards hold ~4.01B params = non-embedding 2.82B + 2 x (193800 x 3072)
    config = llama_config("3b", tokenizer)
    total = non_embedding_params(config) + 2 * 193800 * 3072
    assert abs(total / 1e9 - 4.01) < 0.02


def test_small_preset_size(tokenizer):
    params = non_embedding_params(llama_config("small", tokenizer))
    assert 30e6 < params < 45e6
    assert 70e6 < non_embedding_params(llama_config("100m", tokenizer)) < 110e6


def test_unknown_preset(tokenizer):
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        llama_config("huge", tokenizer)


def test_build_is_seeded_and_stops_on_sge(tokenizer):
    a, b = build_model("tiny", tokenizer, seed=3), build_model("tiny", tokenizer, seed=3)
    assert torch.equal(a.lm_head.weight, b.lm_head.weight)
    assert a.generation_config.eos_token_id == SpeechVocab.from_tokenizer(tokenizer).sge_id
    assert a.get_input_embeddings().weight.shape[0] == len(tokenizer)


@pytest.mark.parametrize("tied", [True, False])
def test_save_and_load_round_trip(tmp_path, tokenizer, tied):
    model = build_model("tiny", tokenizer, seed=0, tie_word_embeddings=tied)
    save(model, tokenizer, tmp_path)
    loaded, tok = load(tmp_path, dtype=torch.float32)
    assert len(tok) == len(tokenizer)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert (loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()) is tied
    ids = torch.tensor([[1, 2, 3]])
    assert torch.allclose(loaded(ids).logits, model(ids).logits)


def test_untied_config_without_lm_head_is_tied_with_a_warning(tmp_path, tokenizer):
    model = build_model("tiny", tokenizer, seed=0, tie_word_embeddings=False)
    save(model, tokenizer, tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["lm_head.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.warns(UserWarning, match="tying it to the embedding"):
        loaded, _ = load(tmp_path, dtype=torch.float32)
    assert torch.equal(loaded.lm_head.weight, model.model.embed_tokens.weight)


def test_load_errors(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="no such directory"):
        load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load(tmp_path / "empty")
    model_dir = tmp_path / "other"
    save(build_model("tiny", tokenizer, seed=0), tokenizer, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["model_type"] = "mistral"
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="Llama"):
        load(model_dir)


def test_vocabulary_checks(tokenizer):
    model = build_model("tiny", tokenizer, seed=0)
    assert check_vocabulary(model, tokenizer, 256).codebook_size == 256
    with pytest.raises(ValueError, match="speaks 256 speech tokens but the codec has 1024 codes"):
        check_vocabulary(model, tokenizer, 1024)
    bigger = build_tokenizer(None, 512)
    with pytest.raises(ValueError, match="embedding rows"):
        check_vocabulary(model, bigger)
