"""Find, read and convert X-codec2 checkpoints into `transformers.Xcodec2Model` weights.

Two layouts exist: transformers' (HKUSTAudio/xcodec2-hf: config.json + model.safetensors that
`Xcodec2Model` reads as is) and the original one (HKUSTAudio/xcodec2, the xcodec2 package:
`CodecEnc.`, `generator.`, ... with weight-norm pairs). transformers ships a conversion
*script*, not a library function, so the key mapping for the original layout is written out
here (spec/XCODEC2_OFFLINE.md). Loading is strict: the official package's worst bug was a
renamed key (`act.beta`) silently left at its initial value, so any missing, unexpected or
mis-shaped key is an error that lists them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import Xcodec2Config

from llasa.checkpoint import check_files, download

ORIGINAL_PREFIXES = ("semantic_model.", "SemanticEncoder_module.", "CodecEnc.", "generator.", "fc_prior.", "fc_post_a.")

# (pattern, replacement), each applied in turn to every key; None drops the key. Buffers are
# dropped because Xcodec2Model recomputes them (they match the stored ones exactly).
ORIGINAL_KEY_RULES: list[tuple[str, str | None]] = [
    (r"\.(upsample\.filter|downsample\.lowpass\.filter)$", None),
    (r"^generator\.head\.istft\.window$", None),
    (r"\.act\.bias$", ".act.beta"),  # xcodec2 0.1.5 calls SnakeBeta's beta `bias`
    (r"^semantic_model\.", "semantic_encoder."),
    (r"^SemanticEncoder_module\.initial_conv\.", "semantic_adapter.conv1."),
    (r"^SemanticEncoder_module\.residual_blocks\.1\.", "semantic_adapter.conv2."),
    (r"^SemanticEncoder_module\.residual_blocks\.3\.", "semantic_adapter.conv3."),
    (r"^SemanticEncoder_module\.final_conv\.", "semantic_adapter.conv4."),
    (r"^CodecEnc\.conv_blocks\.0\.", "acoustic_encoder.conv1."),
    (r"^CodecEnc\.conv_final_block\.0\.", "acoustic_encoder.snake1."),
    (r"^CodecEnc\.conv_final_block\.1\.", "acoustic_encoder.conv2."),
    (r"^fc_prior\.", "fc_encoder."),
    (r"^fc_post_a\.", "acoustic_decoder.fc."),
    (r"^generator\.quantizer\.(project_in|project_out)\.", r"quantizer.\1."),
    (r"^generator\.backbone\.embed\.", "acoustic_decoder.embed."),
    (r"^generator\.backbone\.(prior_net|post_net)\.", r"acoustic_decoder.\1."),
    (r"^generator\.backbone\.final_layer_norm\.", "acoustic_decoder.norm."),
    (r"^generator\.backbone\.transformers\.(\d+)\.att_norm\.", r"acoustic_decoder.layers.\1.input_layernorm."),
    (r"^generator\.backbone\.transformers\.(\d+)\.ffn_norm\.", r"acoustic_decoder.layers.\1.post_attention_layernorm."),
    (r"^generator\.backbone\.transformers\.(\d+)\.att\.c_proj\.", r"acoustic_decoder.layers.\1.self_attn.o_proj."),
    (r"^generator\.backbone\.transformers\.(\d+)\.mlp\.", r"acoustic_decoder.layers.\1.mlp."),
    (r"^generator\.head\.out\.", "acoustic_decoder.head.linear."),
]
_RES_UNIT_PARTS = ("snake1", "conv1", "snake2", "conv2")
_ENCODER_BLOCK_PARTS = {"3": "snake1", "4": "conv1"}
_FUSED_QKV = re.compile(r"^generator\.backbone\.transformers\.(\d+)\.att\.c_attn\.weight$")
_SEMANTIC_LAYER = re.compile(r"^semantic_model\.encoder\.layers\.(\d+)\.")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message lists the offending keys."""


def resolve(name_or_path: str | Path) -> Path:
    """A local directory, or a hub id fetched (config + safetensors only) into the HF cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"'{path}' is a file; pass the directory that holds config.json and model.safetensors")
    name = str(name_or_path)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"codec '{name}' is neither a local directory nor a hub id (owner/name)")
    return download(name, what="codec", allow_patterns=["*.json", "*.safetensors"])


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors weights in '{directory}'")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(file))
    return state


def is_original_layout(state: dict[str, torch.Tensor]) -> bool:
    original = [k for k in state if k.startswith(ORIGINAL_PREFIXES)]
    if original and len(original) != len(state):
        other = sorted(k for k in state if not k.startswith(ORIGINAL_PREFIXES))
        raise CheckpointError(
            f"checkpoint mixes the original X-codec2 layout with other keys: {_listing(other)}"
        )
    return bool(original)


def read_config(directory: Path, *, original_layout: bool) -> Xcodec2Config:
    """config.json -> Xcodec2Config; the original package's config maps to the official sizes."""
    file = directory / "config.json"
    if not file.exists():
        if original_layout:
            return Xcodec2Config()
        raise CheckpointError(f"no config.json in '{directory}' (needed for transformers-layout weights)")
    fields = json.loads(file.read_text())
    if not isinstance(fields, dict):
        raise CheckpointError(f"'{file}' is not a codec config (expected a JSON object)")
    if "semantic_model_config" in fields or "downsampling_ratios" in fields:
        try:
            return Xcodec2Config.from_dict(fields)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"'{file}' is not a valid Xcodec2Config ({' '.join(str(exc).split())})") from None
    # the original package's config (model_type "xcodec"/"xcodec2") names only three widths,
    # and its architecture is fixed at the released sizes
    official = {"semantic_hidden_size": 1024, "codec_encoder_hidden_size": 1024, "codec_decoder_hidden_size": 1024}
    other = {k: fields[k] for k in official if k in fields and fields[k] != official[k]}
    if fields.get("model_type") not in ("xcodec", "xcodec2") or other:
        raise CheckpointError(
            f"'{file}' is neither an Xcodec2Config nor the official xcodec2 config"
            + (f" (unsupported sizes {other})" if other else "")
        )
    return Xcodec2Config()


def _fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace weight-norm (g, v) pairs, in either naming, by the plain weight g * v / |v|."""
    styles = ((".weight_g", ".weight_v"), (".parametrizations.weight.original0", ".parametrizations.weight.original1"))
    out = dict(state)
    for g_suffix, v_suffix in styles:
        for key in [k for k in state if k.endswith(g_suffix)]:
            stem = key[: -len(g_suffix)]
            if stem + v_suffix not in state:
                raise CheckpointError(f"weight-norm magnitude '{key}' has no direction '{stem + v_suffix}'")
            out[stem + ".weight"] = torch._weight_norm(out.pop(stem + v_suffix), out.pop(key), 0)
    return out


def _rename(key: str) -> str | None:
    match = re.match(r"^CodecEnc\.conv_blocks\.(\d+)\.block\.(\d+)\.block\.(\d+)\.(.*)$", key)
    if match:  # residual unit r of encoder block b
        b, r, j, rest = match.groups()
        key = f"acoustic_encoder.block.{int(b) - 1}.res_unit{int(r) + 1}.{_RES_UNIT_PARTS[int(j)]}.{rest}"
    match = re.match(r"^CodecEnc\.conv_blocks\.(\d+)\.block\.([34])\.(.*)$", key)
    if match:
        b, j, rest = match.groups()
        key = f"acoustic_encoder.block.{int(b) - 1}.{_ENCODER_BLOCK_PARTS[j]}.{rest}"
    for pattern, replacement in ORIGINAL_KEY_RULES:
        if re.search(pattern, key):
            if replacement is None:
                return None
            key = re.sub(pattern, replacement, key)
    return key


def convert_original_state_dict(state: dict[str, torch.Tensor], config: Xcodec2Config) -> dict[str, torch.Tensor]:
    """Original X-codec2 keys -> Xcodec2Model keys (spec/XCODEC2_OFFLINE.md, mapping 1-13)."""
    semantic_layers = config.semantic_model_config.num_hidden_layers
    out: dict[str, torch.Tensor] = {}
    for key, value in _fold_weight_norm(state).items():
        layer = _SEMANTIC_LAYER.match(key)
        if layer and int(layer.group(1)) >= semantic_layers:
            continue  # the codec reads hidden_states[16]; later w2v-BERT layers are never used
        fused = _FUSED_QKV.match(key)
        if fused:
            # q, k, v stacked along dim 0; the official RoPE rotates by head index, so it cancels
            # in q.k and the rows need no per-head reordering
            prefix = f"acoustic_decoder.layers.{fused.group(1)}.self_attn."
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[prefix + name + ".weight"] = part.contiguous()
            continue
        new_key = _rename(key)
        if new_key is not None:
            out[new_key] = value
    return out


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Copy `state` into `model`, or raise CheckpointError naming every key that does not fit."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} with the wrong shape (checkpoint vs model): {_listing(mismatched)}")
    if problems:
        raise CheckpointError(f"weights in {source} do not fit the codec: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def read_checkpoint(directory: Path) -> tuple[Xcodec2Config, dict[str, torch.Tensor]]:
    """A checkpoint directory in either layout -> (config, Xcodec2Model state dict)."""
    check_files(directory, what="codec")
    state = read_state_dict(directory)
    original = is_original_layout(state)
    config = read_config(directory, original_layout=original)
    if original:
        state = convert_original_state_dict(state, config)
    return config, state
