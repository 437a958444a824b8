import pytest
import torch

from llasa.codec import Codec
from llasa.lm.model import build_model
from llasa.lm.vocab import build_tokenizer
from llasa.tts import Synthesizer


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    # the test models are tiny: per-op overhead dominates and a second thread only adds
    # contention (OpenMP threads that outnumber free cores stall each other badly)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_builtin_model(monkeypatch, tmp_path_factory):
    """A checkout without the built-in default model (as before it is first trained)."""
    from llasa import defaults

    monkeypatch.setattr(defaults, "DEFAULT_DIR", tmp_path_factory.mktemp("no_default_model"))


# A tiny random codec and LM: the default `codec` / `synth` of test modules that need a
# working synthesizer but not a trained one (a module may define its own instead).
@pytest.fixture(scope="module")
def codec():
    return Codec.from_config("tiny", seed=0)


@pytest.fixture(scope="module")
def synth(codec):
    tokenizer = build_tokenizer(None, codec.codebook_size)
    return Synthesizer(build_model("tiny", tokenizer, seed=1), tokenizer, codec)
