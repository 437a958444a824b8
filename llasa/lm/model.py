"""The Llasa language model: transformers' ``LlamaForCausalLM``, unchanged (spec/LLASA.md §2.2).

Named presets build random-weight configs of the official shapes (``1b``, ``3b``, ``8b``) or of
sizes that train on a CPU (``tiny``, ``micro``, ``mini``, ``small``, ``100m``) for any vocabulary; :func:`load` reads
official checkpoints (hub id or local directory) or ours, tied or untied output heads alike.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from llasa.checkpoint import check_device, check_files, download
from llasa.lm.vocab import SpeechVocab

CONTEXT_LENGTH = 2048  # the official models were trained on 2048-token rows (spec §2.5)

_LLAMA3_ROPE = {  # Llama-3.2's rope scaling, inherited by Llasa-1B/3B
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
}

PRESETS: dict[str, dict] = {
    # test size: builds and runs in milliseconds
    "tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=CONTEXT_LENGTH,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True),
    # ~1.6M non-embedding parameters: the middle size of the train-time scaling study (configs/scaling.sh)
    "micro": dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=3,
                  num_key_value_heads=1, max_position_embeddings=CONTEXT_LENGTH,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True),
    # ~12M non-embedding parameters: the built-in default model (fits the 40 MB budget in bf16
    # with its codec, and trains at several thousand tokens/s on a 2-core CPU)
    "mini": dict(hidden_size=384, intermediate_size=960, num_hidden_layers=8, num_attention_heads=6,
                 num_key_value_heads=2, max_position_embeddings=CONTEXT_LENGTH,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True),
    # ~38M non-embedding parameters
    "small": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=8,
                  num_key_value_heads=4, max_position_embeddings=CONTEXT_LENGTH,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True),
    # ~88M non-embedding parameters (~100M with a 65k codebook)
    "100m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=14, num_attention_heads=12,
                 num_key_value_heads=4, max_position_embeddings=CONTEXT_LENGTH,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True),
    # Llama-3.2-1B-Instruct -> Llasa-1B
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, head_dim=64, max_position_embeddings=131072, rms_norm_eps=1e-5,
               rope_parameters=_LLAMA3_ROPE, tie_word_embeddings=True),
    # Llama-3.2-3B-Instruct -> Llasa-3B (its checkpoint stores a separate lm_head: untied)
    "3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
               num_key_value_heads=8, head_dim=128, max_position_embeddings=131072, rms_norm_eps=1e-5,
               rope_parameters=_LLAMA3_ROPE, tie_word_embeddings=False),
    # Llama-3.1-8B -> Llasa-8B
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, max_position_embeddings=131072, rms_norm_eps=1e-5,
               rope_parameters={**_LLAMA3_ROPE, "factor": 8.0}, tie_word_embeddings=False),
}  # fmt: skip


def llama_config(preset: str, tokenizer: PreTrainedTokenizerBase, **overrides) -> LlamaConfig:
    """A LlamaConfig of a preset's shape with one embedding row per token of ``tokenizer``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    fields = {
        **PRESETS[preset],
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": vocab.pad_id,
        "pad_token_id": vocab.pad_id,
        **overrides,
    }
    return LlamaConfig(**fields)


def build_model(
    preset: str, tokenizer: PreTrainedTokenizerBase, *, seed: int | None = None, dtype: torch.dtype = torch.float32, **overrides
) -> LlamaForCausalLM:
    """A randomly initialised Llasa model of a preset's shape (deterministic under ``seed``)."""
    config = llama_config(preset, tokenizer, **overrides)
    if seed is not None:
        torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(dtype)
    model.generation_config.eos_token_id = SpeechVocab.from_tokenizer(tokenizer).sge_id
    return model.eval()


def resolve(name_or_path: str | Path) -> Path:
    """A local directory as is; anything else is a hub id, downloaded (weights, config, tokenizer)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"'{name_or_path}' is a file; expected a model directory or a hub id like HKUSTAudio/Llasa-1B")
    if str(name_or_path).count("/") != 1 or str(name_or_path).startswith((".", "/", "~")):
        raise ValueError(f"'{name_or_path}': no such directory, and not a hub id (owner/name)")
    return download(str(name_or_path), what="model", allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.txt"])


def load(
    name_or_path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | str = "auto"
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """Load a Llasa checkpoint (HKUSTAudio/Llasa-1B/3B/8B, or a directory we saved) and its tokenizer."""
    check_device(device)
    path = resolve(name_or_path)
    if not (path / "config.json").exists():
        raise ValueError(f"'{path}' has no config.json; is it a model directory?")
    if not any(path.glob("*.safetensors")):
        raise ValueError(f"model '{path}' has no *.safetensors weights")
    check_files(path, what="model")
    try:
        config = LlamaConfig.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError) as exc:  # valid JSON, but not a config transformers can read
        raise ValueError(f"model '{path}': config.json is not a model config ({' '.join(str(exc).split())})") from None
    if config.model_type != "llama":
        raise ValueError(f"'{path}' holds a {config.model_type!r} model; Llasa is a Llama (LlamaForCausalLM)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # tokenizers' Rust parser raises bare Exceptions for a malformed tokenizer.json
        raise ValueError(f"model '{path}': its tokenizer (tokenizer.json, tokenizer_config.json) cannot be loaded: "
                         f"{type(exc).__name__} {' '.join(str(exc).split())}") from None  # fmt: skip
    model, info = LlamaForCausalLM.from_pretrained(path, dtype=dtype, output_loading_info=True)
    if "lm_head.weight" in info["missing_keys"] and not config.tie_word_embeddings:
        # A checkpoint without an output matrix can only mean the embedding serves as one;
        # leaving lm_head at its random init would synthesise noise without any error.
        warnings.warn(f"'{path}': no lm_head.weight stored although tie_word_embeddings=False; tying it to the embedding")
        model.lm_head.weight = model.get_input_embeddings().weight
        model.config.tie_word_embeddings = True
    missing = [k for k in info["missing_keys"] if k != "lm_head.weight"]
    if missing:
        raise ValueError(f"'{path}': checkpoint lacks {len(missing)} weights, e.g. {missing[:3]}")
    check_vocabulary(model, tokenizer)
    model.generation_config.eos_token_id = SpeechVocab.from_tokenizer(tokenizer).sge_id
    return model.to(device).eval(), tokenizer


PREFILL_COPY_LIMIT = 1 << 30  # bytes: the largest fp32 copy prefill_copy makes (~250M parameters)


def prefill_copy(model: LlamaForCausalLM, *, limit: int = PREFILL_COPY_LIMIT) -> LlamaForCausalLM | None:
    """An fp32 copy of a bf16 / fp16 ``model`` on a CPU that has no bf16 arithmetic, to run prompts
    through; None where the model computes fast as it is, or where the copy would exceed ``limit``.

    Why: there a prompt is one large matrix product per layer, emulated in bf16 and ~5x slower
    than in fp32 (510 prompt tokens of the built-in model: 0.9 s against 0.19 s on a 2-core AVX2
    CPU), while one-token decoding steps are bound by reading the weights and run faster in bf16.
    Prefilling in fp32 and decoding in bf16 takes the better of both for one more copy of the
    weights, so the copy is kept only for small models (the official 1B would need 5 GB more)."""
    from llasa.hardware import fast_bf16

    weight = model.get_input_embeddings().weight
    if weight.device.type != "cpu" or weight.dtype == torch.float32:
        return None
    if weight.dtype == torch.bfloat16 and fast_bf16("cpu"):
        return None
    if sum(p.numel() for p in model.parameters()) * 4 > limit:
        return None
    return copy.deepcopy(model).float().eval()


def save(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> Path:
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def check_vocabulary(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, codebook_size: int | None = None) -> SpeechVocab:
    """Fail clearly when the model, its tokenizer and the codec disagree on the vocabulary."""
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < vocab.vocab_size:
        raise ValueError(
            f"model has {rows} embedding rows but its tokenizer has {vocab.vocab_size} tokens: "
            "the checkpoint and tokenizer do not belong together"
        )
    out_rows = model.get_output_embeddings().weight.shape[0]
    if out_rows < vocab.vocab_size:
        raise ValueError(f"model's output layer has {out_rows} rows but the tokenizer has {vocab.vocab_size} tokens")
    if codebook_size is not None and codebook_size != vocab.codebook_size:
        raise ValueError(
            f"the model speaks {vocab.codebook_size} speech tokens but the codec has {codebook_size} codes: "
            "use the codec the model was trained with"
        )
    return vocab
