"""The text front-end: phonemes from espeak-ng (pip wheel), recorded by tokenization and
training, applied by synthesis."""

import numpy as np
import pytest

from llasa.lm.frontend import CONFIG_KEY, Frontend, frontend_of
from llasa.lm.model import build_model
from llasa.lm.vocab import build_tokenizer
from llasa.tts import Synthesizer


def test_text_frontend_is_identity():
    assert Frontend("text")("Hello 42!") == "Hello 42!"


def test_espeak_frontend_gives_ipa_and_reads_numbers():
    ipa = Frontend("espeak:en-us")("Hello there, 42 cats?")
    assert "h" in ipa and "ð" in ipa  # 'there' starts with the voiced dental fricative
    assert "42" not in ipa and "tˈuː" in ipa  # the number is read out ("forty-two"), not left as digits
    assert ipa.endswith("?")  # punctuation (prosody) is kept


@pytest.mark.parametrize("spec", ["espeak", "phones:en", "text:en"])
def test_unknown_frontend_is_named(spec):
    with pytest.raises(ValueError, match="unknown text front-end"):
        Frontend(spec)


def test_unknown_language_is_named():
    with pytest.raises(ValueError, match="does not know the language"):
        Frontend("espeak:xx-nonexistent")


def test_synthesizer_applies_the_models_frontend():
    class FakeCodec:
        codebook_size, sample_rate, hop_length = 16, 16000, 320

    tokenizer = build_tokenizer(None, 16)
    model = build_model("tiny", tokenizer, seed=0)
    plain = Synthesizer(model, tokenizer, FakeCodec())
    assert frontend_of(model).spec == "text"
    setattr(model.config, CONFIG_KEY, "espeak:en-us")
    phonemic = Synthesizer(model, tokenizer, FakeCodec())
    text = "Thirty three thieves"
    rendered_plain = tokenizer.decode(plain.prompt(text))
    rendered_ipa = tokenizer.decode(phonemic.prompt(text))
    assert "Thirty three thieves" in rendered_plain
    assert "θ" in rendered_ipa and "Thirty" not in rendered_ipa
    # the length estimate used for chunking follows the front-end too
    assert phonemic._prompt_length(text, None) == len(phonemic.prompt(text))
    assert np.isfinite(phonemic.max_new_tokens(text))
