import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

import tiny_factory  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--gpu", action="store_true", default=False,
                     help="run the tests marked gpu (they need CUDA; benchmarks/gpu_check.sh passes this)")


def pytest_collection_modifyitems(config, items):
    # GPU tests are left out of the CPU suite (deselected, not skipped); with --gpu they run and fail without CUDA.
    if config.getoption("--gpu"):
        return
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return tiny_factory.make_tokenizer(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="session")
def processor(tokenizer):
    return tiny_factory.make_processor(tokenizer)


@pytest.fixture
def config(tokenizer):
    return tiny_factory.make_config(tokenizer)


@pytest.fixture
def model(config):
    return tiny_factory.make_model(config)


@pytest.fixture
def pixel_values(processor):
    images = [tiny_factory.draw_image(seed) for seed in range(3)]
    return processor(images=images)["pixel_values"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
