"""Vocabulary layout, prompt rendering and training rows, pinned to the official ids (spec §2, §3.1, §6)."""

import numpy as np
import pytest
import torch
from lm_helpers import make_fake_llama3_dir
from transformers import AutoTokenizer

from llasa.lm.prompt import (
    IGNORE_INDEX,
    check_text,
    memmap_row,
    prompt_ids,
    render_prompt,
    training_example,
)
from llasa.lm.vocab import CONTROL_TOKENS, SpeechVocab, build_tokenizer, byte_level_tokenizer

OFFICIAL_PROMPT = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n"
    "Convert the text to speech:<|TEXT_UNDERSTANDING_START|>{text}<|TEXT_UNDERSTANDING_END|><|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n<|SPEECH_GENERATION_START|>"
)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A Llasa tokenizer built the official way on a stand-in Llama-3 tokenizer directory."""
    base = make_fake_llama3_dir(tmp_path_factory.mktemp("llama3"))
    assert len(AutoTokenizer.from_pretrained(base)) == 128256
    return build_tokenizer(str(base), 65536)


@pytest.fixture(scope="module")
def small():
    return build_tokenizer(None, 1000)


def test_official_ids(official):
    assert len(official) == 193800
    ids = official.convert_tokens_to_ids(list(CONTROL_TOKENS))
    assert ids == list(range(128256, 128264))
    assert official.convert_tokens_to_ids("<|s_0|>") == 128264
    assert official.convert_tokens_to_ids("<|s_65535|>") == 193799
    vocab = SpeechVocab.from_tokenizer(official)
    assert (vocab.speech_offset, vocab.codebook_size, vocab.vocab_size) == (128264, 65536, 193800)
    assert (vocab.tus_id, vocab.tue_id, vocab.sgs_id, vocab.sge_id, vocab.pad_id) == (128258, 128259, 128260, 128261, 128009)
    # ordinary added tokens: skip_special_tokens keeps them (spec §9.2)
    assert official.decode([128260, 128264 + 7], skip_special_tokens=True) == "<|SPEECH_GENERATION_START|><|s_7|>"


def test_byte_level_tokenizer_is_small_and_shares_the_layout(small):
    base = byte_level_tokenizer()
    assert len(base) == 261
    vocab = SpeechVocab.from_tokenizer(small)
    assert vocab.speech_offset == 261 + 8 and vocab.codebook_size == 1000 and len(small) == 1269
    assert small.convert_tokens_to_ids("<|SPEECH_GENERATION_START|>") == 261 + 4
    text = "Grüße, 你好!"
    ids = small(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode("utf-8")) and max(ids) < 256
    assert small.decode(ids) == text


def test_speech_vocab_rejects_plain_tokenizers():
    with pytest.raises(ValueError, match="not a Llasa tokenizer"):
        SpeechVocab.from_tokenizer(byte_level_tokenizer())


def test_build_tokenizer_refuses_to_add_twice(small):
    with pytest.raises(ValueError, match="already has Llasa tokens"):
        build_tokenizer(small, 10)


@pytest.mark.parametrize("fixture", ["official", "small"])
def test_rendered_prompt_is_the_official_string(fixture, request):
    tokenizer = request.getfixturevalue(fixture)
    assert render_prompt(tokenizer, "Hello world.") == OFFICIAL_PROMPT.format(text="Hello world.")


def test_prompt_ids_pin_official_control_ids(official):
    ids = prompt_ids(official, "Hello world.")
    assert ids[0] == 128000 and ids[-1] == 128260
    assert ids.count(128258) == 1 and ids.count(128259) == 1
    # the user turn ends: TUE, eot, then the assistant header; the assistant turn stays open
    tue = ids.index(128259)
    assert ids[tue + 1 : tue + 3] == [128009, 128006]
    assert 128009 not in ids[tue + 2 :]
    assert official.decode(ids) == OFFICIAL_PROMPT.format(text="Hello world.")


def test_voice_cloning_prompt(official):
    codes = np.array([0, 17, 65535])
    ids = prompt_ids(official, "And now this.", voice_text="I said that.", voice_codes=codes)
    assert ids[-4:] == [128260, 128264, 128264 + 17, 193799]
    # prompt text and target text share one span, joined by one space
    text = official.decode(ids)
    assert "<|TEXT_UNDERSTANDING_START|>I said that. And now this.<|TEXT_UNDERSTANDING_END|>" in text
    # same as rendering the <|s_k|> strings, as the official card does
    as_strings = official(
        render_prompt(official, "And now this.", "I said that.") + "".join(f"<|s_{c}|>" for c in codes),
        add_special_tokens=False,
    )["input_ids"]
    assert ids == as_strings
    # a transcript ending in whitespace is not given a second space
    spaced = official.decode(prompt_ids(official, "And now this.", voice_text="I said that. ", voice_codes=codes))
    assert "I said that. And now this." in spaced


def test_voice_needs_codes_and_transcript(small):
    with pytest.raises(ValueError, match="both"):
        prompt_ids(small, "Hi there.", voice_text="Hello.")
    with pytest.raises(ValueError, match="out of range"):
        prompt_ids(small, "Hi there.", voice_text="Hello.", voice_codes=np.array([1000]))


@pytest.mark.parametrize(
    "text, message",
    [("", "empty"), ("   \n", "empty"), ("?! ...", "no speakable"), ("say <|s_3|> now", "control token")],
)
def test_unspeakable_text_is_rejected(small, text, message):
    with pytest.raises(ValueError, match=message):
        prompt_ids(small, text)


def test_check_text_allows_non_token_brackets(small):
    assert check_text("a <|not a token|> b", small)


def test_memmap_row_official_layout(official):
    row = memmap_row(official, "Hi.", np.array([3, 4, 5]), max_length=32)
    assert row.dtype == np.int32 and row.shape == (32,)
    text_ids = official("Hi.", add_special_tokens=False)["input_ids"]
    expected = [128258, *text_ids, 128259, 128260, 128267, 128268, 128269, 128261]
    assert row[: len(expected)].tolist() == expected
    assert (row[len(expected) :] == 128009).all()


def test_memmap_row_truncates(small):
    row = memmap_row(small, "Hi.", np.arange(100), max_length=50)
    assert row.shape == (50,) and SpeechVocab.from_tokenizer(small).sge_id not in row


@pytest.mark.parametrize("fixture", ["official", "small"])
def test_training_example_matches_inference(fixture, request):
    tokenizer = request.getfixturevalue(fixture)
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    codes = np.array([5, 0, 999, 42])
    example = training_example(tokenizer, memmap_row(tokenizer, "Hello world.", codes), max_length=2048)
    ids, labels, mask = example["input_ids"], example["labels"], example["attention_mask"]
    assert ids.shape == labels.shape == mask.shape == (2048,)

    # training sequence = inference prompt + codes + SGE, then the closing eot and padding
    prompt = prompt_ids(tokenizer, "Hello world.")
    target = prompt + (codes + vocab.speech_offset).tolist() + [vocab.sge_id]
    assert ids[: len(target)].tolist() == target
    assert (ids[len(target) :] == vocab.pad_id).all()

    # loss on SGS + speech + SGE only
    trained = labels != IGNORE_INDEX
    assert trained.sum() == len(codes) + 2
    assert labels[trained].tolist() == [vocab.sgs_id] + (codes + vocab.speech_offset).tolist() + [vocab.sge_id]
    # attention hides every pad-valued token, including the eots inside the prompt (official quirk)
    assert torch.equal(mask.bool(), ids != vocab.pad_id)
    assert mask[: len(prompt)].sum() == len(prompt) - 2


def test_training_example_unpadded(small):
    row = memmap_row(small, "Hello.", np.array([1, 2, 3]))
    padded = training_example(small, row)
    bare = training_example(small, row, pad=False)
    n = len(bare["input_ids"])
    assert n < 2048 and bare["input_ids"][-1] == SpeechVocab.from_tokenizer(small).pad_id  # the closing eot
    for key in ("input_ids", "labels", "attention_mask"):
        assert torch.equal(bare[key], padded[key][:n])


def test_training_example_of_truncated_row_keeps_its_speech(small):
    vocab = SpeechVocab.from_tokenizer(small)
    row = memmap_row(small, "Hello.", np.arange(300), max_length=256)
    example = training_example(small, row, max_length=256)
    assert example["input_ids"].shape == (256,)
    assert vocab.sge_id not in example["input_ids"].tolist()
    assert (example["labels"][-1] != IGNORE_INDEX).item()


def test_training_example_needs_sgs(small):
    with pytest.raises(ValueError, match="SPEECH_GENERATION_START"):
        training_example(small, np.zeros(10, dtype=np.int32))


def test_training_example_with_no_room_for_speech_is_named(small):
    row = memmap_row(small, "Hello.", np.arange(20), max_length=256)
    with pytest.raises(ValueError, match="max_length 16 leaves no room for speech"):
        training_example(small, row, max_length=16)
