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
