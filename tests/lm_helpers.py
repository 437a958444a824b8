"""Test fixtures for the LM: a stand-in Llama-3 tokenizer directory (no download)."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from llasa.lm.vocab import LLAMA32_CHAT_TEMPLATE

LLAMA3_BASE_IDS = 128000  # BPE ids; 256 special tokens follow, as in Llama-3


def llama3_special_tokens() -> list[str]:
    """The 256 Llama-3 special tokens at ids 128000..128255, in the real order."""
    named = {
        0: "<|begin_of_text|>",
        1: "<|end_of_text|>",
        4: "<|finetune_right_pad_id|>",
        6: "<|start_header_id|>",
        7: "<|end_header_id|>",
        8: "<|eom_id|>",
        9: "<|eot_id|>",
        10: "<|python_tag|>",
    }
    tokens, reserved = [], 0
    for i in range(256):
        if i in named:
            tokens.append(named[i])
        else:
            tokens.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return tokens


def make_fake_llama3_dir(directory: Path) -> Path:
    """A tokenizer directory shaped like meta-llama/Llama-3.2-1B-Instruct's: a byte-level BPE
    (a few merges, filler entries up to 128000 ids), the 256 special tokens (len 128256),
    eos = <|eot_id|> and the real Llama-3.2 chat template."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    merges = [("t", "h"), ("th", "e"), ("Ġ", "t"), ("e", "r"), ("i", "n")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    while len(vocab) < LLAMA3_BASE_IDS:
        vocab[f"<unused_bpe_{len(vocab)}>"] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in llama3_special_tokens()])
    core.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|begin_of_text|>",
                "eos_token": "<|eot_id|>",
                "model_max_length": 131072,
                "chat_template": LLAMA32_CHAT_TEMPLATE,
            }
        )
    )
    return directory
