"""The vLLM backend behind the same API: runs where a CUDA GPU and vllm are present."""

import importlib.util
import io

import numpy as np
import pytest
import soundfile as sf
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(), reason="needs vllm and a CUDA GPU"
)


def test_vllm_backend_speaks(tmp_path):
    import openai

    from llasa.codec import Codec
    from llasa.lm.model import build_model, save
    from llasa.lm.vocab import build_tokenizer
    from llasa.serve import build_app, serve_in_thread

    codec = Codec.from_config("tiny", seed=0)
    tokenizer = build_tokenizer(None, codec.codebook_size)
    save(build_model("tiny", tokenizer, seed=1), tokenizer, tmp_path / "lm")
    codec.save_pretrained(tmp_path / "codec")
    app = build_app(tmp_path / "lm", tmp_path / "codec", backend="vllm", device="cuda")
    synth = app.state.synth
    with serve_in_thread(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)
        text = "Hello there. A second sentence follows."
        wav, rate = sf.read(io.BytesIO(client.audio.speech.create(model="lm", input=text, voice="default").content))
        budget = sum(synth.max_new_tokens(c) for c in synth.split_text(text))
        assert rate == 16000 and 0 < len(wav) <= budget * codec.hop_length and np.isfinite(wav).all()
        with client.audio.speech.with_streaming_response.create(
            model="lm", input=text, voice="default", response_format="pcm", stream_format="audio"
        ) as response:
            streamed = b"".join(response.iter_bytes())
        assert len(streamed) > 0 and len(streamed) % (2 * codec.hop_length) == 0
