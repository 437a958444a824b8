import numpy as np
import pytest
import soundfile as sf

from llasa import audio
from llasa.audio import AudioError

LIBRIVOX = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav"


def tone(seconds=1.0, sr=16000, freq=220.0, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_load_real_speech_file():
    wav = audio.load(LIBRIVOX)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert 1.0 < len(wav) / 16000 < 30.0
    assert 0.01 < np.abs(wav).max() <= 1.0


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_load_formats_stereo_resampled(tmp_path, fmt):
    left, right = tone(1.0, 44100, 220), tone(1.0, 44100, 330)
    path = tmp_path / f"x.{fmt}"
    sf.write(path, np.stack([left, right], axis=1), 44100)
    wav = audio.load(path)
    assert wav.ndim == 1
    assert abs(len(wav) - 16000) <= 2
    # the mix of both channels survives: energy at both frequencies
    spec = np.abs(np.fft.rfft(wav))
    freqs = np.fft.rfftfreq(len(wav), 1 / 16000)
    for f in (220, 330):
        assert spec[np.argmin(np.abs(freqs - f))] > 10 * np.median(spec)


def test_load_bytes_and_int_array():
    wav16 = (tone() * 32767).astype(np.int16)
    out = audio.load(wav16, source_rate=16000)
    assert np.allclose(out, tone(), atol=1e-3)
    data = audio.encode_bytes(tone(), format="flac")
    assert np.allclose(audio.load(data), tone(), atol=1e-3)


def test_missing_and_directory_and_unreadable(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        audio.load(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="directory"):
        audio.load(tmp_path)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not really a wav file")
    with pytest.raises(AudioError, match="bad.wav.*unreadable"):
        audio.load(bad)
    with pytest.raises(AudioError, match="unreadable"):
        audio.load(b"\x00\x01garbage")


def test_empty_short_long(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav.*empty"):
        audio.load(empty)
    with pytest.raises(AudioError, match="shorter than the 1 s minimum"):
        audio.load(tone(0.5), source_rate=16000, min_seconds=1.0)
    with pytest.raises(AudioError, match="longer than the 0.5 s maximum"):
        audio.load(tone(1.0), source_rate=16000, max_seconds=0.5)


def test_nan_and_scale_errors_and_clipping_warning():
    bad = tone()
    bad[10] = np.nan
    with pytest.raises(AudioError, match="1 NaN/inf"):
        audio.load(bad, source_rate=16000)
    with pytest.raises(AudioError, match="integer PCM"):
        audio.load(tone() * 30000, source_rate=16000)
    with pytest.raises(AudioError, match="sample rate"):
        audio.load(tone())
    with pytest.warns(UserWarning, match="clipped"):
        out = audio.load(np.clip(tone(amp=1.5), -1, 1), source_rate=16000)
    assert np.abs(out).max() <= 1.0


def test_write_roundtrip_and_pcm(tmp_path):
    path = audio.write(tmp_path / "sub" / "out.wav", tone())
    assert np.allclose(audio.load(path), tone(), atol=1e-3)
    pcm = audio.encode_bytes(tone(), format="pcm")
    assert len(pcm) == 2 * 16000


def test_crossfade_concat_length_and_continuity():
    a, b = np.ones(1000, np.float32), np.ones(1000, np.float32)
    out = audio.crossfade_concat([a, b], fade_seconds=0.01)
    assert len(out) == 2000 - 160
    # equal-power fade of two equal constant signals never drops below 1
    assert out.min() >= 0.999
    assert len(audio.crossfade_concat([])) == 0
