"""The verifier protocol without models: registry, combiner normalisation, text normalisation,
prefix alignment for partial WER, input checks, and lazy imports."""

import subprocess
import sys

import numpy as np
import pytest

from llasa.audio import AudioError
from llasa.verify import (CombinedVerifier, Score, Verifier, VerifyRequest, available_verifiers, get_verifier,
                          normalize_batch, parse_weights, register_verifier)
from llasa.verify.base import check_wavs
from llasa.verify.text import normalize, units
from llasa.verify.wer import best_prefix


class Fixed:
    """A fake verifier that returns preset totals, and counts its prepare calls."""

    def __init__(self, name, totals, supports_partial=True):
        self.name, self.totals, self.supports_partial = name, totals, supports_partial
        self.prepared = 0

    def prepare(self, request):
        self.prepared += 1
        return {"request": request.text}

    def score(self, wavs, request, state, *, partial=False):
        assert state == {"request": request.text}
        return [Score(t, {"raw": t}, {"note": f"{self.name}{i}"}) for i, t in enumerate(self.totals[: len(wavs)])]


WAVS = [np.zeros(1600, np.float32)] * 3
REQUEST = VerifyRequest("hello world")


def test_zscore_and_rank_normalisation():
    np.testing.assert_allclose(normalize_batch([1.0, 2.0, 3.0], "zscore"), [-1.2247449, 0.0, 1.2247449], atol=1e-6)
    np.testing.assert_allclose(normalize_batch([5.0, 5.0], "zscore"), [0.0, 0.0])
    np.testing.assert_allclose(normalize_batch([0.9, -3.0, 0.1, 0.1], "rank"), [1.0, 0.0, 0.5, 0.5])
    np.testing.assert_allclose(normalize_batch([7.0], "rank"), [0.5])
    np.testing.assert_allclose(normalize_batch([7.0, 1.0], "none"), [7.0, 1.0])
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize_batch([1.0], "minmax")


@pytest.mark.parametrize("method", ["zscore", "rank"])
def test_combiner_makes_scales_comparable(method):
    # candidate 2 is best on the small-scale verifier and second on the big one: it must win
    # once scales are matched, while the raw sum lets the big scale decide alone
    big = Fixed("big", [1000.0, 0.0, 600.0])
    small = Fixed("small", [0.0, 0.01, 0.02])
    combined = CombinedVerifier({big: 1.0, small: 1.0}, normalize=method)
    state = combined.prepare(REQUEST)
    totals = [s.total for s in combined.score(WAVS, REQUEST, state)]
    assert int(np.argmax(totals)) == 2
    raw = [s.total for s in CombinedVerifier({big: 1.0, small: 1.0}, normalize="none").score(WAVS, REQUEST, state)]
    assert int(np.argmax(raw)) == 0
    assert big.prepared == 1 and small.prepared == 1


def test_combiner_weights_keep_components_and_skip_non_partial_parts():
    a, b = Fixed("a", [1.0, 2.0, 3.0]), Fixed("b", [3.0, 2.0, 1.0], supports_partial=False)
    combined = CombinedVerifier({a: 1.0, b: 3.0})
    state = combined.prepare(REQUEST)
    scores = combined.score(WAVS, REQUEST, state)
    assert int(np.argmax([s.total for s in scores])) == 0  # b outweighs a
    assert scores[0].components["a"] == 1.0 and scores[0].components["b.raw"] == 3.0
    assert scores[0].components["b.norm"] == pytest.approx(1.2247449)
    assert scores[1].info == {"a.note": "a1", "b.note": "b1"}
    partial = combined.score(WAVS, REQUEST, state, partial=True)
    assert int(np.argmax([s.total for s in partial])) == 2 and "b" not in partial[0].components
    with pytest.raises(ValueError, match="partial"):
        CombinedVerifier({b: 1.0}).score(WAVS, REQUEST, {"b": {"request": REQUEST.text}}, partial=True)


def test_combiner_rejects_bad_setups():
    with pytest.raises(ValueError, match="distinct"):
        CombinedVerifier({Fixed("a", []): 1.0, Fixed("a", []): 1.0})
    with pytest.raises(ValueError, match="unknown normalisation"):
        CombinedVerifier({Fixed("a", []): 1.0}, normalize="softmax")
    with pytest.raises(KeyError, match="unknown verifier 'nope'"):
        CombinedVerifier("nope:1")


def test_parse_weights():
    assert parse_weights("sim:1, wer:0.5,dnsmos") == {"sim": 1.0, "wer": 0.5, "dnsmos": 1.0}
    with pytest.raises(ValueError, match="bad weight"):
        parse_weights("sim:high")
    with pytest.raises(ValueError, match="empty"):
        parse_weights(" , ")


def test_registry():
    assert {"sim", "wer", "dnsmos", "sanity", "emotion"} <= set(available_verifiers())
    register_verifier("fixed-test", lambda totals=(1.0,): Fixed("fixed-test", list(totals)))
    made = get_verifier("fixed-test", totals=(0.5,))
    assert isinstance(made, Verifier) and made.totals == [0.5]
    with pytest.raises(ValueError, match="already registered"):
        register_verifier("sim", lambda: None)
    with pytest.raises(KeyError, match="available: .*sanity"):
        get_verifier("simm")
    # built-ins construct without loading their model
    for name in ("sim", "wer", "dnsmos", "sanity"):
        assert isinstance(get_verifier(name), Verifier)


def test_importing_and_constructing_loads_no_model_library():
    code = (
        "import sys; import llasa.verify as v; [v.get_verifier(n) for n in ('sim', 'wer', 'dnsmos', 'sanity')];"
        "print(sorted(m for m in ('resemblyzer', 'pocketsphinx', 'onnxruntime', 'librosa', 'speechmos',"
        " 'silero_vad', 'transformers', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_text_normalisation():
    assert normalize("In 1990, Dr. Smith paid $3.5 for the 21st item!") == (
        "in nineteen ninety dr smith paid three point five for the twenty first item"
    )
    assert normalize("Don't STOP—it’s well-known; 1,500 of them.") == "dont stop its well known one thousand five hundred of them"
    assert units("你好，世界。", "zh") == ["你", "好", "世", "界"]
    assert units("Hello, world.", "en-US") == ["hello", "world"]


def test_best_prefix_aligns_partial_transcripts():
    ref = "the quick brown fox jumps over the lazy dog".split()
    assert best_prefix(ref, "the quick brown".split()) == ref[:3]
    assert best_prefix(ref, "the quack brown fax".split()) == ref[:4]
    assert best_prefix(ref, []) == []
    assert best_prefix(ref, "zebra".split()) == ref[:1]  # a wrong word still counts as an error


def test_bad_input_is_a_clear_error():
    with pytest.raises(AudioError, match="list of 1-D arrays"):
        check_wavs(np.zeros(100, np.float32))
    with pytest.raises(AudioError, match=r"candidate 1: expected a 1-D waveform"):
        check_wavs([np.zeros(10), np.zeros((2, 10))])
    with pytest.raises(AudioError, match="NaN"):
        check_wavs([np.array([0.0, np.nan])])
    with pytest.raises(ValueError, match="no words left"):
        get_verifier("wer").prepare(VerifyRequest(" ... !"))
    with pytest.raises(ValueError, match="rate_range"):
        get_verifier("sanity", rate_range=(2.0, 1.0))


def test_word_errors_count_after_normalisation_and_pool_over_a_list():
    from llasa.verify.text import pooled_error_rate, word_errors

    assert word_errors("Don't stop, Smith! 12", "dont stop smith twelve") == (0, 4)
    assert word_errors("one two three", "one too three four") == (2, 3)  # a substitution and an insertion
    assert word_errors("one two three", "") == (3, 3)  # nothing heard: every word deleted
    assert word_errors("", "noise") == (1, 0)
    # pooled: 2 errors over 3 + 1 words, not the mean of 2/3 and 0/1
    assert pooled_error_rate(["one two three", "four"], ["one too three four", "four"]) == 0.5
    with pytest.raises(ValueError):
        pooled_error_rate(["one"], [])
