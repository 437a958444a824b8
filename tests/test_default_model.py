"""The built-in default model: the README's first command works offline, named voices resolve,
and the shipped weights fit the size budget."""

import numpy as np
import pytest
import soundfile as sf

from llasa.cli import main
from llasa.defaults import DEFAULT_DIR, default_codec_path, default_model_path, default_voice_name, named_voices

pytestmark = pytest.mark.skipif(
    default_model_path() is None or default_codec_path() is None, reason="no built-in default model in this checkout"
)


def test_weights_fit_the_budget():
    total = sum(p.stat().st_size for p in DEFAULT_DIR.rglob("*.safetensors"))
    assert total <= 40e6


def test_readme_command_speaks(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "fox.wav"
    assert main(["tts", "The quick brown fox jumps over the lazy dog.", "-o", str(out), "--seed", "0"]) == 0
    wav, rate = sf.read(out)
    assert rate == 16000 and wav.ndim == 1
    assert 0.3 < len(wav) / rate < 15  # a budget from the text caps generation
    assert np.isfinite(wav).all() and np.abs(wav).max() > 0.01


def test_named_voices(tmp_path, capsys):
    voices = named_voices()
    assert default_voice_name() in voices and len(voices) >= 3
    assert main(["voices"]) == 0
    assert "(default)" in capsys.readouterr().out
    name = sorted(voices)[0]
    assert main(["tts", "Hello there.", "-o", str(tmp_path / "v.wav"), "--voice", name, "--seed", "1"]) == 0
    assert main(["tts", "Hello.", "-o", str(tmp_path / "x.wav"), "--voice", "no_such_voice"]) == 2
    assert "named voices" in capsys.readouterr().err


def test_builtin_codec_resynthesises_by_synthesis(tmp_path):
    """The shipped codec recommends refinement (`llasa_encode`): `llasa codec resynth` uses it, and
    its codes render the input closer (in the refinement's distance) than the encoder's own."""
    import torch

    from llasa.audio import load, write
    from llasa.codec import Codec
    from llasa.codec.refine import SynthesisDistance
    from llasa.tts import Voice

    codec = Codec.from_pretrained(default_codec_path())
    assert codec.refine_steps > 0
    wav = codec.decode(Voice.load(named_voices()[default_voice_name()]).codes)[:16000]  # 1 s of a voice
    path = write(tmp_path / "in.wav", wav)
    assert main(["codec", "resynth", str(path), "-o", str(tmp_path / "out.wav")]) == 0
    wav, resynth = load(path), load(tmp_path / "out.wav")
    plain = codec.decode(codec.encode(wav))[: len(wav)]
    target = SynthesisDistance(16000, torch.from_numpy(wav)[None], cepstral_weight=codec.refine_cepstral)
    distance = lambda x: float(target(torch.from_numpy(x)[None]))  # noqa: E731
    assert len(resynth) == len(wav) and distance(resynth) < distance(plain)


def test_the_builtin_model_recommends_best_of_4_on_pocketsphinx():
    """bench/default_search.py's decision, recorded in the model's config: best-of-4 with the wer
    verifier on PocketSphinx cut Whisper's WER by 40 % at 1.8x the time of one sample."""
    import json
    from types import SimpleNamespace

    from llasa.search import Searcher

    from pathlib import Path

    config = json.loads((Path(default_model_path()) / "config.json").read_text())
    searcher = Searcher.of_model(SimpleNamespace(config=SimpleNamespace(**config)))
    assert (searcher.strategy, searcher.n, searcher.verifier.name, searcher.verifier.backend) == (
        "best-of-n", 4, "wer", "pocketsphinx")  # fmt: skip
