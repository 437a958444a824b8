"""Search over real SpeechDecoder candidates of a tiny model: best-of-N picks the verifier's
argmax, beam search keeps the top-B rows at every step, budgets hold, seeds reproduce; judging
on the worker thread while rows still sample gives what judging at the end gives;
the named paper recipe with the real sim and wer verifiers; `llasa tts --search`."""

import argparse
import json
import threading

import numpy as np
import pytest
import soundfile as sf

from llasa.search.cli import add_commands
from llasa.lm.model import save
from llasa.search import Searcher, search
from llasa.tts import Synthesizer
from llasa.verify import CombinedVerifier, Score, VerifyRequest


TOKENS = 30  # per-chunk token cap: keeps every search to a few hundred tiny-model steps


@pytest.fixture(autouse=True)
def short_chunks(monkeypatch):
    monkeypatch.setattr(Synthesizer, "max_new_tokens", lambda self, text: TOKENS)


@pytest.fixture(scope="module")
def voice(synth):
    wav = (0.1 * np.sin(np.linspace(0, 2000, 24_000))).astype(np.float32)
    return synth.voice(wav, "A voice to clone.", source_rate=16_000, name="sine")


class Loudness:
    """A deterministic stand-in verifier: total = RMS of the audio; records every call."""

    name = "loud"
    supports_partial = True

    def __init__(self):
        self.calls = []

    def prepare(self, request):
        return None

    def score(self, wavs, request, state, *, partial=False):
        self.calls.append(([len(w) for w in wavs], partial))
        return [Score(float(np.sqrt(np.mean(np.square(w)))) if len(w) else 0.0) for w in wavs]


def rms(wav):
    return float(np.sqrt(np.mean(np.square(wav))))


def test_best_of_n_picks_the_argmax_of_real_candidates(synth):
    verifier = Loudness()
    result = search(synth, "Hi there.", strategy="best-of-n", n=6, verifiers=verifier, seed=3)
    (chunk,) = result.chunks
    # the candidates are exactly the decoder's rows under that seed, decoded by the synthesizer
    expected = synth.decoder("Hi there.", n=6, seed=3).run()
    assert len(chunk.candidates) == 6
    for cand, codes in zip(chunk.candidates, expected):
        np.testing.assert_array_equal(cand.codes, codes)
    loudness = [rms(w) for w in synth.decode(expected)]
    assert len(set(loudness)) == 6  # distinct, so the argmax is unambiguous
    assert chunk.chosen == int(np.argmax(loudness))
    np.testing.assert_allclose([c.score for c in chunk.candidates], loudness, rtol=1e-5)
    # decoded in one batch with other candidates of its length: equal up to float rounding
    np.testing.assert_allclose(result.audio, synth.decode([expected[chunk.chosen]])[0], atol=1e-5)
    assert verifier.calls == [([len(c) * 320 for c in expected], False)]  # one outcome call, whole audio
    assert result.spent.tokens == sum(len(c) + (c.size < TOKENS) for c in expected)
    assert result.spent.candidates == 6 and result.spent.verifier_clips == 6


class LoudnessAlone(Loudness):
    """Loudness declared per-candidate: the search may score it piece by piece as rows end."""

    name = "loud-alone"
    per_candidate = True

    def score(self, wavs, request, state, *, partial=False):
        self.threads = getattr(self, "threads", set()) | {threading.current_thread().name}
        return super().score(wavs, request, state, partial=partial)


def _ends_early(synth, n, seed):
    """A seed whose rows end at different lengths (so finished rows can be judged while others sample)."""
    rows = synth.decoder("Hi there.", n=n, seed=seed).run()
    return len({len(r) for r in rows}) > 1


def test_rows_are_judged_as_they_end_on_the_worker_with_the_same_result(synth, monkeypatch):
    seed = next(s for s in range(20) if _ends_early(synth, 6, s))
    alone, batch = LoudnessAlone(), Loudness()
    scored = threading.Event()
    score = alone.score
    monkeypatch.setattr(alone, "score", lambda *a, **k: (score(*a, **k), scored.set())[0])
    make_decoder = synth.decoder

    def decoder(*args, **kwargs):
        dec = make_decoder(*args, **kwargs)
        step = dec.step

        def step_once_the_first_rows_are_judged(k=1):
            if any(row.finished for row in dec.rows):
                assert scored.wait(30), "a finished row was not judged while the others sampled"
            return step(k)

        dec.step = step_once_the_first_rows_are_judged
        return dec

    with monkeypatch.context() as patch:
        patch.setattr(synth, "decoder", decoder)
        pieces = search(synth, "Hi there.", n=6, verifiers=alone, seed=seed)
    whole = search(synth, "Hi there.", n=6, verifiers=batch, seed=seed)
    assert len(alone.calls) > 1 and len(batch.calls) == 1  # scored in pieces, and at once
    assert sum(len(lengths) for lengths, _ in alone.calls) == 6
    assert alone.threads == {"llasa-judge_0"}  # never on the sampling thread
    assert pieces.chunks[0].chosen == whole.chunks[0].chosen
    scores = [[c.score for c in result.chunks[0].candidates] for result in (pieces, whole)]
    np.testing.assert_allclose(*scores, rtol=1e-5)
    np.testing.assert_allclose(pieces.audio, whole.audio, atol=1e-5)
    assert pieces.spent.verifier_clips == 6 and pieces.spent.verifier_calls == len(alone.calls)


def test_chunks_judged_while_the_next_samples_match_chunks_searched_alone(synth, monkeypatch):
    from llasa.lm.sampling import offset_seed

    text = "Hi there. How are you today?"
    monkeypatch.setattr(synth, "split_text", lambda t, voice=None: Synthesizer.split_text(synth, t, voice, max_chunk_chars=12))
    chunks = synth.split_text(text)
    assert len(chunks) == 3
    together = search(synth, text, n=3, verifiers=LoudnessAlone(), seed=5)
    for i, (chunk, found) in enumerate(zip(chunks, together.chunks, strict=True)):
        alone = search(synth, chunk, n=3, verifiers=LoudnessAlone(), seed=offset_seed(5, i)).chunks[0]
        assert found.text == chunk and found.chosen == alone.chosen
        assert [c.score for c in found.candidates] == pytest.approx([c.score for c in alone.candidates])
    assert together.spent.candidates == 9


def test_a_combination_scored_in_pieces_is_normalised_over_the_whole_batch(synth):
    class PeakAlone(LoudnessAlone):
        name = "peak-alone"

        def score(self, wavs, request, state, *, partial=False):
            return [Score(float(np.abs(w).max()) if len(w) else 0.0) for w in wavs]

    seed = next(s for s in range(20) if _ends_early(synth, 5, s))
    parts = {LoudnessAlone(): 1.0, PeakAlone(): 0.5}
    result = search(synth, "Hi there.", n=5, verifiers=parts, normalize="rank", seed=seed)
    cands = result.chunks[0].candidates
    combined = CombinedVerifier(parts, normalize="rank")
    request = VerifyRequest("Hi there.")
    expected = combined.score([c.audio for c in cands], request, combined.prepare(request))
    assert [c.score for c in cands] == pytest.approx([e.total for e in expected])
    assert [c.components for c in cands] == pytest.approx([e.components for e in expected])


def test_a_judging_error_stops_the_search(synth):
    class Refuses(Loudness):
        def prepare(self, request):
            raise ValueError("this verifier refuses the request")

    with pytest.raises(ValueError, match="refuses the request"):
        search(synth, "Hi there.", n=3, verifiers=Refuses(), seed=0)


def test_candidates_a_screen_rejected_are_counted(synth):
    class Screens(Loudness):
        per_candidate = True

        def score(self, wavs, request, state, *, partial=False):
            return [Score(0.0, {}, {"rejected": "no_speech"} if i % 2 else {}) for i, _ in enumerate(wavs)]

    result = search(synth, "Hi there.", n=1, verifiers=Screens(), seed=0)
    assert result.spent.screened_out == 0
    result = search(synth, "Hi there.", n=4, verifiers={Screens(): 1.0, Peak(): 1.0}, seed=0)
    assert result.spent.screened_out == sum("loud.rejected" in c.info for c in result.chunks[0].candidates)


def test_wer_search_on_noise_transcribes_nothing(synth):
    pytest.importorskip("silero_vad")
    class DeafASR:
        name, languages = "deaf", None

        def transcribe(self, wavs, language):
            pytest.fail("the ASR was asked to hear noise")

    searcher = Searcher("best-of-n", verifiers="wer", n=4)
    searcher.verifier._asr = DeafASR()
    result = searcher(synth, "Hi there.", seed=0)
    # a random model speaks noise: every candidate is screened out, scored as silence (all deleted)
    assert result.spent.screened_out == 4
    assert all(c.components["wer"] == 1.0 and c.info["rejected"] == "no_speech" for c in result.chunks[0].candidates)


def test_beam_keeps_the_top_b_rows_at_every_step(synth, voice, codec):
    verifier = Loudness()
    searcher = Searcher("beam", verifiers=verifier, beam_width=2, expand=3, step_tokens=7)
    result = searcher(synth, "Hello.", voice, seed=0)
    (chunk,) = result.chunks
    assert len(chunk.steps) >= 3
    partial_calls = [c for c in verifier.calls if c[1]]
    assert len(partial_calls) == len(chunk.steps)
    for step, (lengths, _) in zip(chunk.steps, partial_calls):
        assert len(step.scores) == len(step.rows) == len(lengths)
        # the partial audio is the new speech so far: the voice prompt's samples are not in it
        assert set(lengths) == {step.tokens * codec.hop_length}
        assert step.tokens % 7 == 0
        order = sorted(range(len(step.rows)), key=lambda j: (-step.scores[j], j))
        assert step.kept == [step.rows[j] for j in order[:2]]
        assert len(step.rows) <= 2 * 3  # B beams, each expanded into M rows
    # the final pool is judged by the outcome call on whole sequences
    assert verifier.calls[-1][1] is False
    assert chunk.chosen == int(np.argmax([c.score for c in chunk.candidates]))
    assert {c.stop_reason for c in chunk.candidates} <= {"end", "length"}
    assert all(len(c.audio) == len(c.codes) * codec.hop_length for c in chunk.candidates)


def test_beam_is_deterministic_under_a_seed_and_respects_the_budget(synth):
    def run(seed):
        return search(synth, "Hello.", strategy="beam", verifiers=Loudness(), beam_width=2, expand=2, step_tokens=5,
                      max_tokens=70, seed=seed)  # fmt: skip

    a, b, c = run(4), run(4), run(5)
    assert a.spent.tokens <= 70 and a.spent.tokens > 70 - 4  # spent up to the last affordable step
    assert any(cand.stop_reason == "budget" for cand in a.chunks[0].candidates)
    assert [s.kept for s in a.chunks[0].steps] == [s.kept for s in b.chunks[0].steps]
    for x, y in zip(a.chunks[0].candidates, b.chunks[0].candidates, strict=True):
        np.testing.assert_array_equal(x.codes, y.codes)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert not all(np.array_equal(x.codes, y.codes) for x, y in zip(a.chunks[0].candidates, c.chunks[0].candidates))


def test_best_of_n_budget_cuts_every_candidate(synth):
    result = search(synth, "Hi.", n=4, verifiers=Loudness(), max_tokens=4 * 10 + 3, seed=0)
    cands = result.chunks[0].candidates
    assert result.spent.tokens <= 43
    assert all(c.stop_reason in ("budget", "end") and len(c.codes) <= 10 for c in cands)
    with pytest.raises(ValueError, match="cannot sample one token for each of 4 rows"):
        search(synth, "Hi.", n=4, verifiers=Loudness(), max_tokens=3)


def test_voice_verifiers_need_a_voice(synth):
    with pytest.raises(ValueError, match="sim compare with a voice prompt"):
        search(synth, "Hi.", strategy="prm-sim+orm-wer")
    with pytest.raises(ValueError, match="unknown search strategy"):
        Searcher("greedy")
    with pytest.raises(ValueError, match="fixes its verifiers"):
        Searcher("prm-sim+orm-wer", verifiers="wer")


def test_paper_recipe_with_real_verifiers(synth, voice):
    searcher = Searcher("prm-sim+orm-wer", beam_width=2, expand=2, step_tokens=10)
    assert searcher.verifier.name == "sim" and searcher.final_verifier.name == "wer"
    result = searcher(synth, "Hello there.", voice, seed=0)
    chunk = result.chunks[0]
    assert chunk.steps and all(len(s.kept) <= 2 for s in chunk.steps)
    assert all(-1.0 <= s <= 1.0 for step in chunk.steps for s in step.scores)  # cosine similarities
    wers = [c.components["wer"] for c in chunk.candidates]
    assert all("hyp" in c.info for c in chunk.candidates)
    assert chunk.chosen == int(np.argmin(wers))
    json.dumps(result.to_dict())  # the report is plain JSON


def test_weighted_combination_is_normalised(synth, voice):
    result = search(synth, "Hi.", voice, n=3, verifiers={"sim": 1.0, Loudness(): 2.0}, normalize="rank", seed=0)
    cands = result.chunks[0].candidates
    for c in cands:
        assert c.score == pytest.approx(c.components["sim.norm"] + 2 * c.components["loud.norm"])
        assert set(c.components) >= {"sim", "loud", "sim.cosine"}
    assert sorted(c.components["loud.norm"] for c in cands) == [0.0, 0.5, 1.0]


class Peak(Loudness):
    """Another stand-in: total = peak amplitude, so a weighted sum with loudness ranks by batch."""

    name = "peak"

    def score(self, wavs, request, state, *, partial=False):
        return [Score(float(np.abs(w).max()) if len(w) else 0.0) for w in wavs]


def test_best_of_first_k_is_what_best_of_k_returns(synth):
    def searcher(n, **kw):
        return Searcher("best-of-n", verifiers={Loudness(): 1.0, Peak(): 1.0}, n=n, **kw)

    big = searcher(6)
    full = big(synth, "Hi there.", seed=1)
    cands = full.chunks[0].candidates
    stored = [dict(c.components) for c in cands]
    for k in (1, 2, 3, 4, 6):
        alone = searcher(k)(synth, "Hi there.", seed=1)
        sub = big.best_of_first(full, k)
        assert sub.chosen == [c.chosen for c in alone.chunks]
        assert sub.tokens == alone.spent.tokens
        np.testing.assert_allclose(sub.audio, alone.audio, atol=1e-5)
    # this seed tells the cases apart: a row that ended (its END token counts), and first-k choices
    # that differ from ranking by the scores normalised over all six
    assert "end" in [c.stop_reason for c in cands[:2]]
    assert any(big.best_of_first(full, k).chosen[0] != int(np.argmax([c.score for c in cands[:k]])) for k in (2, 3, 4))
    assert big.best_of_first(full, 6).chosen == [full.chunks[0].chosen]
    assert [c.components for c in cands] == stored  # re-ranking leaves the candidates' own scores alone
    with pytest.raises(ValueError, match="between 1 and N=6"):
        big.best_of_first(full, 7)
    with pytest.raises(ValueError, match="do not nest"):
        Searcher("beam", verifiers=Loudness()).best_of_first(full, 1)
    with pytest.raises(ValueError, match="token budget"):
        searcher(6, max_tokens=1000).best_of_first(full, 1)


# ------------------------------------------------------------------------------- CLI
def parse(argv):
    parser = argparse.ArgumentParser(prog="llasa")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_tts_search_writes_scores(tmp_path, synth, codec):
    save(synth.model, synth.tokenizer, tmp_path / "lm")
    codec.save_pretrained(tmp_path / "codec")
    out = tmp_path / "out.wav"
    args = parse(["tts", "Hi there.", "-o", str(out), "--model", str(tmp_path / "lm"), "--codec", str(tmp_path / "codec"),
                  "--search", "best-of-n", "-n", "3", "--verifier", "wer", "--seed", "0", "--scores"])  # fmt: skip
    assert args.handler(args) == 0
    assert out.exists()
    report = json.loads((tmp_path / "out.scores.json").read_text())
    assert report["strategy"] == "best-of-n" and len(report["chunks"][0]["candidates"]) == 3
    assert report["spent"]["candidates"] == 3
    args = parse(["tts", "Hi.", "-o", str(out), "--model", str(tmp_path / "lm"), "--codec", str(tmp_path / "codec"),
                  "--search", "prm-sim+orm-wer"])  # fmt: skip
    with pytest.raises(ValueError, match="voice prompt"):
        args.handler(args)
    args = parse(["tts", "Hi.", "-o", str(out), "--model", str(tmp_path / "lm"), "--codec", str(tmp_path / "codec"),
                  "--beam-width", "2"])  # fmt: skip
    with pytest.raises(ValueError, match="--beam-width needs --search"):
        args.handler(args)
    # --search none samples once per chunk, as without --search: its audio is plain tts's under the seed
    base = ["tts", "Hi.", "-o", str(out), "--model", str(tmp_path / "lm"), "--codec", str(tmp_path / "codec"), "--seed", "2"]
    args = parse([*base, "--search", "none"])
    assert args.handler(args) == 0
    np.testing.assert_allclose(sf.read(out, dtype="float32")[0], synth.tts("Hi.", seed=2, progress=False), atol=1e-4)
    args = parse([*base, "--search", "none", "--verifier", "wer"])
    with pytest.raises(ValueError, match="--verifier needs --search"):
        args.handler(args)
