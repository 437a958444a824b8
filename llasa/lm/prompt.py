"""Prompts and training rows, in the official Llasa formats (spec/LLASA.md §2.3, §2.4, §3.1).

Every prompt goes through the tokenizer's own chat template (Llama-3.2's), so the model sees
at inference exactly the token layout it was trained on. The template stamps "Today Date:"
from the clock; we pass a fixed ``date_string`` (the template's own fallback) so prompts and
training rows are deterministic and identical between training and inference. The official
training rendered the date of each training day, so the line is noise the model has seen.
"""

from __future__ import annotations

import re
import unicodedata
import weakref

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from llasa.lm.vocab import (
    SPEECH_GENERATION_START,
    TEXT_UNDERSTANDING_END,
    TEXT_UNDERSTANDING_START,
    SpeechVocab,
    has_token,
)

PROMPT_DATE = "26 Jul 2024"
INSTRUCTION = "Convert the text to speech:"
IGNORE_INDEX = -100

_TOKEN_LIKE = re.compile(r"<\|[^|<>]{1,64}\|>")


def check_text(text: str, tokenizer: PreTrainedTokenizerBase | None = None, *, what: str = "text") -> str:
    """Reject text that cannot be spoken: empty, no letters or digits, or containing a
    token of the vocabulary written out (it would be read as that token, not as text)."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{what} is empty")
    if not any(unicodedata.category(ch)[0] in "LN" for ch in text):
        raise ValueError(f"{what} has no speakable characters (no letters or digits): {text[:80]!r}")
    if tokenizer is not None:
        for match in _TOKEN_LIKE.finditer(text):
            if has_token(tokenizer, match.group(0)):
                raise ValueError(f"{what} contains the control token {match.group(0)}, which cannot be spoken")
    return text


def join_voice_text(voice_text: str, text: str) -> str:
    # The official card concatenates prompt_text + text directly; without a separator the
    # last word of the transcript and the first word of the target run together, so we
    # insert one space when neither side brings whitespace (community apps do the same).
    if voice_text[-1:].isspace() or text[:1].isspace():
        return voice_text + text
    return voice_text + " " + text


def tts_messages(text: str, voice_text: str | None = None) -> list[dict[str, str]]:
    """The official chat: user asks for ``text`` (after the voice transcript when cloning);
    the assistant turn starts the speech stream."""
    spoken = join_voice_text(voice_text, text) if voice_text else text
    return [
        {"role": "user", "content": f"{INSTRUCTION}{TEXT_UNDERSTANDING_START}{spoken}{TEXT_UNDERSTANDING_END}"},
        {"role": "assistant", "content": SPEECH_GENERATION_START},
    ]


def render_prompt(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    voice_text: str | None = None,
    *,
    date_string: str = PROMPT_DATE,
) -> str:
    """The prompt as a string, ending with <|SPEECH_GENERATION_START|> (voice codes not included)."""
    return tokenizer.apply_chat_template(
        tts_messages(text, voice_text), tokenize=False, continue_final_message=True, date_string=date_string
    )


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    voice_text: str | None = None,
    voice_codes: np.ndarray | None = None,
    date_string: str = PROMPT_DATE,
    vocab: SpeechVocab | None = None,
) -> list[int]:
    """Token ids of a TTS prompt: the rendered chat, then the voice's codes as speech ids.

    Voice codes are appended as ids (offset + k) rather than rendered as ``<|s_k|>`` strings:
    the tokenizer maps each such string to exactly that id, so the result is identical and we
    skip re-tokenising thousands of added tokens.
    """
    check_text(text, tokenizer)
    if (voice_codes is None) != (voice_text is None):
        raise ValueError("voice cloning needs both the voice's codes and its transcript")
    if voice_text is not None:
        check_text(voice_text, tokenizer, what="voice transcript")
    vocab = vocab or SpeechVocab.from_tokenizer(tokenizer)
    ids = tokenizer(render_prompt(tokenizer, text, voice_text, date_string=date_string), add_special_tokens=False)[
        "input_ids"
    ]
    if voice_codes is not None:
        ids = ids + speech_ids(voice_codes, vocab).tolist()
    return ids


def speech_ids(codes: np.ndarray, vocab: SpeechVocab) -> np.ndarray:
    """Codec codes -> token ids, checking the range against the vocabulary's codebook."""
    codes = np.asarray(codes)
    if codes.ndim != 1:
        raise ValueError(f"codes must be 1-D, got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, got {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() >= vocab.codebook_size):
        raise ValueError(
            f"codes out of range [0, {vocab.codebook_size}): min {codes.min()}, max {codes.max()} "
            "(was the audio encoded with a different codec?)"
        )
    return codes.astype(np.int64) + vocab.speech_offset


def memmap_row(tokenizer: PreTrainedTokenizerBase, text: str, codes: np.ndarray, max_length: int = 2048) -> np.ndarray:
    """One utterance as the official ``get_memmap_from_token`` stores it (spec §3.1 step 2):
    ``TUS text TUE SGS codes+offset SGE``, truncated or right-padded with eos to ``max_length``
    (int32). Rows are turned into training examples by :func:`training_example`."""
    check_text(text, tokenizer)
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    text_ids = tokenizer(f"{TEXT_UNDERSTANDING_START}{text}{TEXT_UNDERSTANDING_END}", add_special_tokens=False)[
        "input_ids"
    ]
    ids = np.concatenate([text_ids, [vocab.sgs_id], speech_ids(codes, vocab), [vocab.sge_id]]).astype(np.int64)
    row = np.full(max_length, vocab.pad_id, dtype=np.int32)
    n = min(len(ids), max_length)
    row[:n] = ids[:n]
    return row


def training_example(
    tokenizer: PreTrainedTokenizerBase,
    row: np.ndarray,
    max_length: int = 2048,
    *,
    pad: bool = True,
    date_string: str = PROMPT_DATE,
) -> dict[str, torch.Tensor]:
    """The official ``TTSDataset.__getitem__`` (spec §3.1 steps 3-6) for one memmap row.

    The chat template is rendered with the two placeholders (TUS in the user turn, SGS in the
    assistant turn), which are replaced by the row's text span and speech span. Labels keep
    SGS, the speech tokens and SGE only (the trailing eot equals pad and is masked, as
    officially); ``attention_mask = input_ids != pad`` (which, as officially, also hides the
    eot tokens closing the system and user turns).

    ``pad=True`` right-pads to ``max_length`` (the official layout). ``pad=False`` returns the
    example at its true length (truncated to ``max_length``), for trainers that pack rows or
    group them by length; the token sequence and masks are the same up to that length.
    """
    vocab, template = _training_template(tokenizer, date_string)
    row = np.asarray(row).astype(np.int64)
    sgs = np.flatnonzero(row == vocab.sgs_id)
    if sgs.size == 0:
        raise ValueError("training row has no <|SPEECH_GENERATION_START|> token; build rows with memmap_row()")
    sgs = int(sgs[0])
    sge = np.flatnonzero(row == vocab.sge_id)
    end = int(sge[0]) + 1 if sge.size else len(row)  # a truncated row keeps all its speech
    text_sequence, speech_sequence = row[:sgs].tolist(), row[sgs:end].tolist()

    ids = _replace_first(template, vocab.tus_id, text_sequence)
    ids = _replace_first(ids, vocab.sgs_id, speech_sequence)
    start = ids.index(vocab.sgs_id)
    if start >= max_length - 1:
        raise ValueError(f"max_length {max_length} leaves no room for speech: the prompt and text of this row "
                         f"take {start + 1} tokens; raise max_length")  # fmt: skip
    ids = ids[:max_length]

    input_ids = torch.tensor(ids, dtype=torch.long)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[start:] = input_ids[start:]
    labels[input_ids == vocab.pad_id] = IGNORE_INDEX
    attention_mask = (input_ids != vocab.pad_id).long()
    if pad and len(ids) < max_length:
        extra = max_length - len(ids)
        input_ids = torch.cat([input_ids, torch.full((extra,), vocab.pad_id, dtype=torch.long)])
        labels = torch.cat([labels, torch.full((extra,), IGNORE_INDEX, dtype=torch.long)])
        attention_mask = torch.cat([attention_mask, torch.zeros(extra, dtype=torch.long)])
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


# tokenizer -> {(date, vocabulary size): (vocab, template ids)}. Rendering the chat template
# (jinja) and tokenizing it cost ~0.3 ms a row: a third of a GPU training step at batch 64
_TEMPLATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _training_template(tokenizer: PreTrainedTokenizerBase, date_string: str) -> tuple[SpeechVocab, list[int]]:
    """The tokenized chat template with the TUS (text) and SGS (speech) placeholders."""
    cached = _TEMPLATES.setdefault(tokenizer, {})
    key = (date_string, len(tokenizer))
    if key not in cached:
        chat = [
            {"role": "user", "content": f"{INSTRUCTION}{TEXT_UNDERSTANDING_START}"},
            {"role": "assistant", "content": SPEECH_GENERATION_START},
        ]
        template = tokenizer.apply_chat_template(chat, tokenize=False, date_string=date_string)
        cached[key] = (SpeechVocab.from_tokenizer(tokenizer), tokenizer(template, add_special_tokens=False)["input_ids"])
    return cached[key]


def _replace_first(ids: list[int], placeholder: int, sequence: list[int]) -> list[int]:
    i = ids.index(placeholder)
    return ids[:i] + sequence + ids[i + 1 :]
