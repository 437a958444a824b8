import pytest
import torch


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
