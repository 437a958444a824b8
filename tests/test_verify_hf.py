"""Verifiers with user-supplied transformers weights (WavLM-SV, Whisper, emotion2vec-style encoders),
exercised with tiny random-weight models built from configs and saved to a temporary directory."""

import json

import numpy as np
import pytest

from llasa.verify import VerifyRequest, get_verifier

transformers = pytest.importorskip("transformers")

_SMALL_ENCODER = dict(
    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
    conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def audio():
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    tone = (0.3 * np.sin(np.arange(24000) / 5)).astype(np.float32)
    return noise, tone


@pytest.fixture(scope="module")
def wavlm_dir(tmp_path_factory):
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    path = tmp_path_factory.mktemp("wavlm-sv")
    config = WavLMConfig(**_SMALL_ENCODER, xvector_output_dim=8, tdnn_dim=(8, 8), tdnn_kernel=(3, 1),
                         tdnn_dilation=(1, 1), num_buckets=8, max_bucket_distance=20)
    WavLMForXVector(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def data2vec_dir(tmp_path_factory):
    from transformers import Data2VecAudioConfig, Data2VecAudioModel, Wav2Vec2FeatureExtractor

    path = tmp_path_factory.mktemp("data2vec")
    Data2VecAudioModel(Data2VecAudioConfig(**_SMALL_ENCODER)).save_pretrained(path)
    # emotion models are often trained at another rate: the embedder must resample to it
    Wav2Vec2FeatureExtractor(sampling_rate=8000).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer)

    path = tmp_path_factory.mktemp("whisper")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {tok: i for i, tok in enumerate(letters + ["\u0120" + c for c in letters] + ["\u0120"])}
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    end = "<|endoftext|>"
    tokenizer = WhisperTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), unk_token=end,
                                 bos_token=end, eos_token=end, pad_token=end)
    specials = ["<|startoftranscript|>", "<|en|>", "<|zh|>", "<|transcribe|>", "<|notimestamps|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in [end, *specials]}
    config = WhisperConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, num_mel_bins=80, max_target_positions=16,
                           decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids[end],
                           pad_token_id=ids[end], bos_token_id=ids[end])
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids[end], pad_token_id=ids[end],
        max_length=8, is_multilingual=True, lang_to_id={"<|en|>": ids["<|en|>"], "<|zh|>": ids["<|zh|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"]}, no_timestamps_token_id=ids["<|notimestamps|>"],
    )
    model.save_pretrained(path)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(path)
    return path


@pytest.mark.parametrize("name", ["sim", "emotion"])
def test_embedding_verifiers_from_a_local_dir(name, wavlm_dir, data2vec_dir, audio):
    noise, tone = audio
    model = wavlm_dir if name == "sim" else data2vec_dir
    verifier = get_verifier(name, model=str(model))
    request = VerifyRequest("hello", prompt_audio=noise)
    state = verifier.prepare(request)
    batch = verifier.score([noise, tone, np.zeros(10, np.float32)], request, state)
    assert batch[0].total == pytest.approx(1.0, abs=1e-5)  # the prompt itself
    assert -1.0 <= batch[1].total < 1.0 - 1e-4
    assert batch[2].total == -1.0 and batch[2].info["flags"] == "too_short"
    # a candidate's score does not depend on what else is in the batch
    (alone,) = verifier.score([tone], request, state, partial=True)
    assert alone.total == pytest.approx(batch[1].total, abs=1e-5)


def test_emotion_layer_choice_changes_the_embedding(data2vec_dir, audio):
    noise, tone = audio
    request = VerifyRequest("hello", prompt_audio=noise)
    totals = []
    for layer in (0, 2):
        verifier = get_verifier("emotion", model=str(data2vec_dir), layer=layer)
        totals.append(verifier.score([tone], request, verifier.prepare(request))[0].total)
    assert totals[0] != pytest.approx(totals[1], abs=1e-6)


def test_embedder_feeds_the_model_at_its_own_sample_rate(data2vec_dir, audio):
    import torch

    from llasa.audio import resample
    from llasa.verify.hf import TransformersEmbedder

    embedder = TransformersEmbedder(data2vec_dir)
    tone = audio[1]
    inputs = embedder.extractor(resample(tone, 16000, 8000), sampling_rate=8000, return_tensors="pt")
    with torch.inference_mode():
        expected = embedder.model(**inputs).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(embedder([tone])[0], expected, atol=1e-5)


def test_emotion_requires_a_model():
    with pytest.raises(ValueError, match="needs model="):
        get_verifier("emotion")


def test_missing_model_directory_is_a_clear_error(tmp_path, audio):
    verifier = get_verifier("sim", model=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        verifier.prepare(VerifyRequest("hello", prompt_audio=audio[0]))


def test_whisper_wer_runs_and_forces_the_language(whisper_dir, audio, monkeypatch):
    # no screen: the test clips are noise and a tone, which it would reject before the model hears them
    verifier = get_verifier("wer", model=str(whisper_dir), screen=False)
    assert verifier.backend == "whisper"
    request = VerifyRequest("你好，世界", language="zh")
    state = verifier.prepare(request)
    assert state.reference == ["你", "好", "世", "界"]
    seen = {}
    generate = verifier.asr.model.generate

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return generate(*args, **kwargs)

    monkeypatch.setattr(verifier.asr.model, "generate", spy)
    scores = verifier.score([audio[0], audio[1]], request, state)
    assert seen["language"] == "zh" and seen["task"] == "transcribe"
    for s in scores:
        assert isinstance(s.info["hyp"], str)
        assert s.components["cer"] >= 0 and s.total == -s.components["cer"]
        assert s.info["asr"] == f"whisper:{whisper_dir}"
