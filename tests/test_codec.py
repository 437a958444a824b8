"""Codec behaviour on the `tiny` preset: lengths, batching, streaming, loading, bad input, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Xcodec2Model

from llasa.audio import AudioError
from llasa.cli import main as cli_main
from llasa.codec import CheckpointError, Codec, get_config
from llasa.codec.features import pad_waveform, semantic_features
from llasa.codec.testing import randomize_weights


def speech_like(num_samples: int, seed: int = 0) -> np.ndarray:
    t = np.arange(num_samples) / 16000
    noise = np.random.RandomState(seed).randn(num_samples)
    return (0.3 * np.sin(2 * np.pi * (150 + 40 * seed) * t * (1 + t)) + 0.02 * noise).astype(np.float32)


@pytest.fixture(scope="module")
def codec() -> Codec:
    return randomize_weights(Codec.from_config("tiny", seed=0), seed=1)


@pytest.fixture(scope="module")
def saved(codec, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_codec")
    codec.save_pretrained(directory)
    return directory


# --- presets and sizes ------------------------------------------------------------------------


def test_presets_define_codebook_and_hop():
    tiny = Codec.from_config("tiny")
    assert (tiny.sample_rate, tiny.hop_length, tiny.codebook_size) == (16000, 320, 256)
    assert Codec.from_config("small").codebook_size == 1000
    official = get_config("xcodec2")
    assert official.semantic_model_config.num_hidden_layers == 16 and np.prod(official.quantization_levels) == 65536
    with pytest.raises(ValueError, match="unknown codec preset 'huge'.*tiny"):
        get_config("huge")


def test_seed_makes_random_weights_reproducible():
    a, b = Codec.from_config("tiny", seed=5), Codec.from_config("tiny", seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))


def test_config_with_another_hop_is_refused():
    with pytest.raises(ValueError, match="hop 320"):
        Codec.from_config({**get_config("tiny").to_dict(), "downsampling_ratios": [2, 2, 4, 4, 4]})


# --- encode / decode --------------------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [320 * 10, 320 * 10 + 1, 320 * 10 + 319, 16000, 555])
def test_code_count_follows_the_official_padding_rule(codec, num_samples):
    codes = codec.encode(speech_like(num_samples))
    assert codes.dtype == np.int64 and codes.ndim == 1
    assert len(codes) == num_samples // 320 + 1 == codec.num_codes(num_samples)
    assert semantic_features(pad_waveform(speech_like(num_samples), 320)).shape == (len(codes), 160)


def test_randomized_codec_gives_input_dependent_codes(codec):
    a, b = codec.encode(speech_like(16000, seed=0)), codec.encode(speech_like(16000, seed=3))
    assert len(np.unique(a)) > 3 and not np.array_equal(a, b)


def test_decode_gives_320_samples_per_code(codec):
    codes = codec.encode(speech_like(8000))
    audio = codec.decode(codes)
    assert audio.dtype == np.float32 and audio.shape == (320 * len(codes),)
    assert np.isfinite(audio).all() and audio.std() > 0
    assert np.array_equal(codec.decode(list(codes)), audio)  # a plain list of ints is one sequence
    assert np.array_equal(codec.decode(torch.from_numpy(codes)), audio)


def test_batched_encode_equals_one_by_one(codec):
    # equal and unequal lengths, in an order that interleaves the length groups
    wavs = [speech_like(n, seed=i) for i, n in enumerate([9600, 12345, 9600 + 5, 16000, 9700, 12345])]
    alone = [codec.encode(w) for w in wavs]
    together = codec.encode(wavs, batch_size=2)
    assert isinstance(together, list) and len(together) == len(wavs)
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)


def test_batched_decode_equals_one_by_one(codec):
    codes = codec.encode([speech_like(n, seed=i) for i, n in enumerate([6400, 9000, 6400])])
    together = codec.decode(codes)
    for c, audio in zip(codes, together):
        np.testing.assert_allclose(codec.decode(c), audio, atol=1e-5)


# --- bad input --------------------------------------------------------------------------------


def test_codes_outside_the_codebook_are_refused(codec):
    with pytest.raises(ValueError, match="code 256 is outside the codebook of 256 codes"):
        codec.decode(np.array([1, 2, 256]))
    with pytest.raises(ValueError, match="code -1 is outside"):
        codec.decode(np.array([-1, 2]))
    with pytest.raises(ValueError, match="item 1: code 999"):
        codec.decode([np.array([1]), np.array([999])])


@pytest.mark.parametrize(
    "codes, message",
    [(np.array([], dtype=np.int64), "empty"), (np.array([1.0, 2.0]), "integers"), (np.zeros((2, 3), int), "1-D")],
)
def test_malformed_codes_are_refused(codec, codes, message):
    with pytest.raises(ValueError, match=message):
        codec.decode(codes)


@pytest.mark.parametrize(
    "wav, message",
    [
        (np.zeros(0, np.float32), "empty"),
        (np.zeros((2, 1600), np.float32), "1-D mono"),
        (np.zeros(1600, np.int16), "float audio"),
        (np.full(1600, np.nan, np.float32), "NaN"),
        (np.full(1600, 300.0, np.float32), "outside"),
    ],
)
def test_bad_audio_is_refused(codec, wav, message):
    with pytest.raises(AudioError, match=message):
        codec.encode(wav)


# --- streaming --------------------------------------------------------------------------------


class LocalDecoder:
    """A stand-in decoder whose sample at token t depends on tokens t-2..t+2 only: streaming
    with enough context and lookahead must then reproduce the full decode exactly."""

    hop_length, codebook_size, reach = 320, 256, 2

    def _decode_tensor(self, codes: torch.Tensor) -> np.ndarray:
        values = codes[0, 0].double().numpy()
        padded = np.pad(values, self.reach)
        mixed = sum((k + 1) * padded[k : k + len(values)] for k in range(2 * self.reach + 1))
        ramp = np.linspace(0, 1, self.hop_length)
        return (np.repeat(mixed, self.hop_length) * np.tile(ramp, len(values)))[None].astype(np.float32)


def _stream(decoder, codes, **kwargs) -> np.ndarray:
    from llasa.codec.streaming import StreamingDecoder

    stream = StreamingDecoder(decoder, **kwargs)
    return np.concatenate([chunk for code in codes for chunk in stream.push(code)] + stream.flush())


def test_stream_windows_and_joins_are_exact_for_a_local_decoder():
    codes = np.random.RandomState(0).randint(0, 256, 97)
    full = LocalDecoder()._decode_tensor(torch.from_numpy(codes)[None, None])[0]
    # lookahead = reach + 1: the cross-faded hop after a chunk also sees all its right neighbours
    exact = _stream(LocalDecoder(), codes, chunk_tokens=10, left_context=2, lookahead=3)
    np.testing.assert_allclose(exact, full, rtol=1e-6)
    # without lookahead the end of every chunk misses its right neighbours
    assert not np.allclose(_stream(LocalDecoder(), codes, chunk_tokens=10, left_context=2, lookahead=0), full)


def test_stream_with_context_decodes_after_it_and_never_emits_it():
    rng = np.random.RandomState(1)
    context, codes = rng.randint(0, 256, 30), rng.randint(0, 256, 57)
    both = LocalDecoder()._decode_tensor(torch.from_numpy(np.concatenate([context, codes]))[None, None])[0]
    hop = LocalDecoder.hop_length
    streamed = _stream(LocalDecoder(), [codes[:20], codes[20:]], chunk_tokens=10, left_context=4, lookahead=3, context=context)
    # the first chunk's left edge hears the context's last codes, exactly as decoding both at once
    np.testing.assert_allclose(streamed, both[len(context) * hop :], rtol=1e-6)
    without = _stream(LocalDecoder(), [codes], chunk_tokens=10, left_context=4, lookahead=3)
    assert without.shape == streamed.shape and not np.allclose(without[:hop], streamed[:hop])
    # after flush, the next stream starts from the context again
    from llasa.codec.streaming import StreamingDecoder

    stream = StreamingDecoder(LocalDecoder(), chunk_tokens=10, left_context=4, lookahead=3, context=context)
    first = np.concatenate(stream.push(codes) + stream.flush())
    again = np.concatenate(stream.push(codes) + stream.flush())
    np.testing.assert_array_equal(first, again)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - estimate) ** 2)))


def test_stream_decode_of_the_codec(codec):
    codes = codec.encode(speech_like(16000 * 3))
    full = codec.decode(codes)
    chunks = list(codec.stream_decode(iter(codes.tolist()), chunk_tokens=25, left_context=50))
    assert [len(c) for c in chunks[:-1]] == [25 * 320] * (len(chunks) - 1)
    streamed = np.concatenate(chunks)
    assert streamed.shape == full.shape
    # random weights make the decoder global (GroupNorm statistics over time, diffuse
    # attention), so only the ordering is checked here: context and lookahead must help
    blind = np.concatenate(list(codec.stream_decode(codes, chunk_tokens=25, left_context=0, lookahead=0)))
    assert snr_db(full, streamed) > snr_db(full, blind) + 1
    # a lookahead longer than the stream leaves everything to the final, complete window
    whole = np.concatenate(list(codec.stream_decode(codes, chunk_tokens=25, lookahead=len(codes))))
    np.testing.assert_allclose(whole, full, atol=1e-5)


def test_stream_emits_as_soon_as_chunk_and_lookahead_arrive(codec):
    from llasa.codec.streaming import StreamingDecoder

    stream = StreamingDecoder(codec, chunk_tokens=10, left_context=20, lookahead=3)
    codes = codec.encode(speech_like(16000))
    assert stream.push(codes[:12]) == []  # 12 < 10 + 3
    assert [len(c) for c in stream.push(codes[12])] == [3200]  # a single int works
    rest = stream.push(codes[13:]) + stream.flush()
    total = 3200 + sum(len(c) for c in rest)
    assert total == 320 * len(codes)
    # pieces of any size give the same audio as one code at a time
    one_by_one = np.concatenate(list(codec.stream_decode(codes.tolist(), chunk_tokens=10, left_context=20)))
    in_arrays = np.concatenate(
        list(codec.stream_decode([codes[:7], codes[7:30], codes[30:]], chunk_tokens=10, left_context=20))
    )
    np.testing.assert_allclose(one_by_one, in_arrays, atol=1e-6)


def test_stream_refuses_bad_codes_naming_the_position(codec):
    with pytest.raises(ValueError, match="after position 3: code 300 is outside the codebook of 256"):
        list(codec.stream_decode([1, 2, 3, 300]))


# --- saving and loading -----------------------------------------------------------------------


def test_save_and_load_round_trip(codec, saved):
    assert {p.name for p in saved.iterdir()} >= {"config.json", "model.safetensors"}
    loaded = Codec.from_pretrained(saved)
    wav = speech_like(9000)
    np.testing.assert_array_equal(loaded.encode(wav), codec.encode(wav))
    assert isinstance(Xcodec2Model.from_pretrained(saved), Xcodec2Model)  # plain transformers reads it


def test_from_pretrained_casts_dtype(saved):
    assert Codec.from_pretrained(saved, dtype=torch.bfloat16).dtype == torch.bfloat16


def _copy_with(saved, tmp_path, edit):
    state = load_file(str(saved / "model.safetensors"))
    edit(state)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((saved / "config.json").read_text())
    return tmp_path


def test_missing_key_is_named(saved, tmp_path):
    directory = _copy_with(saved, tmp_path, lambda s: s.pop("acoustic_encoder.block.0.snake1.act.beta"))
    with pytest.raises(CheckpointError, match=r"1 missing: acoustic_encoder\.block\.0\.snake1\.act\.beta"):
        Codec.from_pretrained(directory)


def test_unexpected_key_is_named(saved, tmp_path):
    directory = _copy_with(saved, tmp_path, lambda s: s.update({"acoustic_encoder.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"1 unexpected: acoustic_encoder\.extra\.weight"):
        Codec.from_pretrained(directory)


def test_wrong_shape_is_named(saved, tmp_path):
    directory = _copy_with(saved, tmp_path, lambda s: s.update({"fc_encoder.bias": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"wrong shape.*fc_encoder\.bias \(3,\) vs \(192,\)"):
        Codec.from_pretrained(directory)


def test_directory_without_weights_or_config(saved, tmp_path):
    with pytest.raises(CheckpointError, match="no \\*.safetensors weights"):
        Codec.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="no config.json"):
        Codec.from_pretrained(tmp_path)


def test_unknown_config_json_is_refused(saved, tmp_path):
    directory = _copy_with(saved, tmp_path, lambda s: None)
    (directory / "config.json").write_text(json.dumps({"model_type": "encodec"}))
    with pytest.raises(CheckpointError, match="neither an Xcodec2Config nor the official"):
        Codec.from_pretrained(directory)


def test_mixed_layouts_are_refused(saved, tmp_path):
    directory = _copy_with(saved, tmp_path, lambda s: s.update({"CodecEnc.conv_blocks.0.bias": torch.zeros(8)}))
    with pytest.raises(CheckpointError, match="mixes the original"):
        Codec.from_pretrained(directory)


def test_a_name_that_is_neither_dir_nor_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a local directory nor a hub id"):
        Codec.from_pretrained(tmp_path / "missing" / "deeper")


# --- CLI --------------------------------------------------------------------------------------


def test_cli_encode_decode_resynth(saved, tmp_path, capsys):
    from llasa.audio import load, write

    wav_path = write(tmp_path / "in.wav", speech_like(12000))
    codes_path, out_path = tmp_path / "codes.npy", tmp_path / "out.wav"
    assert cli_main(["codec", "encode", str(wav_path), "-o", str(codes_path), "--codec", str(saved)]) == 0
    codes = np.load(codes_path)
    assert codes.shape == (12000 // 320 + 1,)
    assert cli_main(["codec", "decode", str(codes_path), "-o", str(out_path), "--codec", str(saved)]) == 0
    assert len(load(out_path)) == 320 * len(codes)
    assert cli_main(["codec", "resynth", str(wav_path), "-o", str(out_path), "--codec", str(saved)]) == 0
    assert len(load(out_path)) == 12000


def test_cli_without_codec_says_so(tmp_path, capsys, no_builtin_model):
    assert cli_main(["codec", "encode", str(tmp_path / "x.wav"), "-o", str(tmp_path / "c.npy")]) == 2
    assert "--codec is required" in capsys.readouterr().err


def test_cli_decode_of_out_of_range_codes(saved, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.array([5, 70000]))
    args = ["codec", "decode", str(tmp_path / "bad.npy"), "-o", str(tmp_path / "o.wav"), "--codec", str(saved)]
    assert cli_main(args) == 2
    assert "outside the codebook of 256 codes" in capsys.readouterr().err


def test_semantic_bf16_runs_w2v_bert_in_bf16_only(codec, saved):
    fast = Codec.from_pretrained(saved, semantic_bf16=True)
    seen = {}

    def record(name):
        def hook(module, args, out):
            seen[name] = out.dtype

        return hook

    fast.model.semantic_encoder.encoder.layers[0].ffn1.intermediate_dense.register_forward_hook(record("semantic"))
    fast.model.acoustic_encoder.conv1.register_forward_hook(record("acoustic"))
    codes = fast.encode(speech_like(8000))
    assert seen == {"semantic": torch.bfloat16, "acoustic": torch.float32}
    assert len(codes) == 8000 // 320 + 1
    assert fast.model.state_dict().keys() == codec.model.state_dict().keys()


# --- inference fast paths ------------------------------------------------------------------------


@pytest.mark.parametrize("channels, length, batch", [(8, 1001, 2), (48, 4000, 1)])
def test_fast_anti_aliased_snake_equals_transformers_bit_for_bit(channels, length, batch):
    from transformers.models.xcodec2.modeling_xcodec2 import (
        Xcodec2AntiAliasedActivation1d,
        Xcodec2SnakeBeta,
    )

    from llasa.codec.fastpath import anti_aliased_snake, scratch

    torch.manual_seed(0)
    module = Xcodec2AntiAliasedActivation1d(Xcodec2SnakeBeta(channels))
    with torch.no_grad():
        module.act.alpha.normal_(0, 0.5)
        module.act.beta.normal_(0, 0.5)
        x = torch.randn(batch, channels, length)
        assert torch.equal(anti_aliased_snake(module, x), module(x))
        with scratch():  # reused buffers: every call as exact as the first
            for signal in (x, x.flip(-1), x[..., : length // 2], x):
                assert torch.equal(anti_aliased_snake(module, signal), module(signal))


def test_fast_paths_serve_inference_and_leave_gradients_to_transformers(codec):
    from transformers.models.xcodec2.modeling_xcodec2 import (
        Xcodec2AntiAliasedActivation1d,
    )

    activation = next(m for m in codec.model.modules() if isinstance(m, Xcodec2AntiAliasedActivation1d))
    assert "forward" in vars(activation)  # installed on the instance, the class untouched
    assert "forward" not in vars(Xcodec2AntiAliasedActivation1d(activation.act))
    x = torch.randn(1, activation.act.alpha.shape[0], 300, requires_grad=True)
    # transformers' own forward: autograd works (autograd.grad leaves the shared fixture's parameters without .grad)
    (grad,) = torch.autograd.grad(activation(x).sum(), [x])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_onednn_matmul_matches_torch_and_steps_aside_for_gradients():
    import torch.nn.functional as F

    from llasa.hardware import ONEDNN_MIN_ROWS, OneDNNMatmul

    torch.manual_seed(0)
    x, weight, bias = torch.randn(3, ONEDNN_MIN_ROWS, 40), torch.randn(24, 40), torch.randn(24)
    signal, kernel = torch.randn(2, 40, ONEDNN_MIN_ROWS), torch.randn(24, 40, 1)
    with torch.no_grad():
        reference, conv_reference = F.linear(x, weight, bias), F.conv1d(signal, kernel, bias)
        with OneDNNMatmul():
            out, conv_out = F.linear(x, weight, bias), F.conv1d(signal, kernel, bias)
    assert out.shape == reference.shape and out.is_contiguous() and conv_out.shape == conv_reference.shape
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv_out, conv_reference, rtol=1e-5, atol=1e-5)
    leaf = weight.clone().requires_grad_()
    with OneDNNMatmul():
        F.linear(x, leaf, bias).sum().backward()  # needs a gradient: torch's own product
    torch.testing.assert_close(leaf.grad, x.sum(dim=(0, 1)).expand(24, -1))
    with torch.no_grad(), OneDNNMatmul(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.linear(x, weight, bias).dtype == torch.bfloat16  # autocast's bf16 product, not an fp32 one


# --- analysis-by-synthesis encoding -------------------------------------------------------------


def _mel_codec() -> Codec:
    config = get_config("tiny")
    config.encoder_type, config.mel_bins, config.mel_encoder_layers = "mel", 32, 1
    return randomize_weights(Codec.from_config(config, seed=0), seed=1)


def _mel_distance(codec: Codec, wav: np.ndarray, codes: np.ndarray) -> float:
    from llasa.codec.losses import MultiScaleMelLoss

    padded = torch.from_numpy(pad_waveform(wav, 320))[None]
    return float(MultiScaleMelLoss()(torch.from_numpy(codec.decode(codes))[None], padded))


@pytest.mark.parametrize("variant", ["waveform", "mel"])
def test_refinement_starts_from_the_encoders_codes_and_audio(codec, variant):
    from llasa.codec.refine import _decode, quantizer_inputs

    codec = codec if variant == "waveform" else _mel_codec()
    wav = speech_like(9600, seed=2)
    assert np.array_equal(codec.encode(wav, refine_steps=0), codec.encode(wav))
    waves = torch.from_numpy(pad_waveform(wav, 320))[None, None]
    extra = {}
    if getattr(codec.model, "uses_semantic_features", True):
        extra["input_features"] = semantic_features(waves[0, 0].numpy())[None]
    with torch.no_grad():
        start = quantizer_inputs(codec.model, lambda: codec.model.encode(input_values=waves, **extra))
        audio, codes = _decode(codec.model, start)
    assert np.array_equal(codes[0].numpy(), codec.encode(wav))
    np.testing.assert_allclose(audio[0, 0].numpy(), codec.decode(codec.encode(wav)), atol=1e-5)


def test_refined_codes_are_closer_to_the_input_and_leave_the_model_alone(codec):
    codec = Codec(codec.model, refine_lr=0.5)  # random weights saturate the FSQ bound: small steps stall
    wavs = [speech_like(9600, seed=3), speech_like(9600, seed=4)]
    before = {k: v.clone() for k, v in codec.model.state_dict().items()}
    plain = codec.encode(wavs)
    refined = codec.encode(wavs, refine_steps=8)
    for wav, p, r in zip(wavs, plain, refined):
        assert r.shape == p.shape and r.dtype == np.int64 and 0 <= r.min() and r.max() < codec.codebook_size
        assert not np.array_equal(r, p)  # the search moved some codes
        assert _mel_distance(codec, wav, r) < _mel_distance(codec, wav, p)
    assert all(torch.equal(before[k], v) for k, v in codec.model.state_dict().items())
    assert all(p.grad is None for p in codec.model.parameters())


def test_cepstral_distance_reads_the_envelope_not_the_level():
    from llasa.codec.losses import CepstralDistance

    distance = CepstralDistance()
    speech, other = torch.from_numpy(speech_like(16000, seed=5)), torch.from_numpy(speech_like(16000, seed=6))
    assert float(distance(speech[None], speech[None])) == 0
    assert float(distance(0.5 * speech[None], speech[None])) < 1e-3  # the level is c0, left out
    per_item = distance(torch.stack([speech, other]), torch.stack([speech, speech]), per_item=True)
    assert per_item.shape == (2,) and per_item[0] == 0 and per_item[1] > 0.1
    with pytest.raises(ValueError, match="n_ceps must be between 2 and n_mels"):
        CepstralDistance(n_ceps=41)


def test_the_cepstral_term_changes_the_search_and_is_brought_down(codec):
    from llasa.codec.refine import SynthesisDistance

    wav = speech_like(9600, seed=3)
    mel_only = Codec(codec.model, refine_lr=0.5).encode(wav, refine_steps=8)
    refined = Codec(codec.model, refine_lr=0.5, refine_cepstral=3.0).encode(wav, refine_steps=8)
    assert not np.array_equal(refined, mel_only)
    distance = SynthesisDistance(16000, torch.from_numpy(pad_waveform(wav, 320))[None], cepstral_weight=3.0)
    objective = lambda codes: float(distance(torch.from_numpy(codec.decode(codes))[None]))  # noqa: E731
    assert objective(refined) < objective(codec.encode(wav)) and objective(refined) < objective(mel_only)


def test_a_codec_recommends_its_refinement_in_config_json(codec, tmp_path):
    assert codec.refine_steps == 0  # the released checkpoints recommend none
    codec.model.config.llasa_encode = {"refine_steps": 4, "refine_lr": 0.1, "refine_cepstral": 2.0}
    try:
        codec.save_pretrained(tmp_path)
    finally:
        del codec.model.config.llasa_encode
    loaded = Codec.from_pretrained(tmp_path)
    assert (loaded.refine_steps, loaded.refine_lr, loaded.refine_cepstral) == (4, 0.1, 2.0)
    assert Codec(loaded.model, refine_cepstral=0).refine_cepstral == 0  # an argument overrides the config
    with pytest.raises(ValueError, match="refine_steps must be 0 or more"):
        loaded.encode(speech_like(3200), refine_steps=-1)
    with pytest.raises(ValueError, match="refine_lr positive"):
        Codec(loaded.model, refine_lr=0)
    with pytest.raises(ValueError, match="refine_cepstral must be 0 or more"):
        Codec(loaded.model, refine_cepstral=-1)


def test_cli_refines_as_the_codec_recommends_unless_told(saved, tmp_path, capsys):
    import shutil

    from llasa.audio import load, write

    recommends = tmp_path / "codec"
    shutil.copytree(saved, recommends)
    config = json.loads((recommends / "config.json").read_text())
    (recommends / "config.json").write_text(json.dumps({**config, "llasa_encode": {"refine_steps": 8, "refine_lr": 0.5}}))
    wav_path = write(tmp_path / "in.wav", speech_like(9600, seed=3))
    base = ["codec", "encode", str(wav_path), "--codec", str(recommends), "-o"]
    assert cli_main(base + [str(tmp_path / "refined.npy")]) == 0
    assert cli_main(base + [str(tmp_path / "plain.npy"), "--refine-steps", "0"]) == 0
    loaded, wav = Codec.from_pretrained(recommends), load(wav_path)
    refined, plain = np.load(tmp_path / "refined.npy"), np.load(tmp_path / "plain.npy")
    assert np.array_equal(plain, loaded.encode(wav)) and np.array_equal(refined, loaded.encode(wav, refine_steps=8))
    assert np.array_equal(refined, loaded.encode(wav, refine_steps=None))  # None: the recommendation
    assert not np.array_equal(refined, plain)
    with pytest.raises(SystemExit) as exited:
        cli_main(base + [str(tmp_path / "bad.npy"), "--refine-steps", "-2"])
    assert exited.value.code == 2 and "--refine-steps: must be 0 or more" in capsys.readouterr().err
