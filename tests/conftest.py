import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

import tiny_factory  # noqa: E402


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
