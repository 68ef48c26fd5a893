"""The metrics as local evaluate modules: offline loading, same results as the functions, packaging."""

import subprocess
import sys
import zipfile
from pathlib import Path

import evaluate
import numpy as np
import pytest

from tag2text.training.metrics import (
    MODULE_NAMES,
    compute_caption_metrics,
    compute_retrieval_metrics,
    compute_tagging_metrics,
    load_metric,
    metric_path,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")


def test_caption_module_equals_function():
    preds = ["A dog runs on the grass.", "A red car parked on a street.", "Two birds sit on a wire."]
    refs = [["a dog running on grass", "the brown dog runs"], ["a red car on the street"], ["birds on a power line"]]
    ids = ["d", "c", "b"]
    module = evaluate.load(str(metric_path("caption")))  # plain evaluate.load of the folder
    out = module.compute(predictions=preds, references=refs, image_ids=ids, tokenizer="python", meteor=False)
    expected = compute_caption_metrics(dict(zip(ids, refs)), dict(zip(ids, preds)), tokenizer="python", meteor=False)
    assert out == expected
    assert out["corpus"]["CIDEr"] > 0


def test_tagging_module_equals_function():
    rng = np.random.default_rng(0)
    scores = rng.random((30, 6)).astype(np.float32)
    labels = (rng.random((30, 6)) < 0.3).astype(np.int8)
    module = load_metric("tagging")
    out = module.compute(predictions=scores, references=labels, thresholds=0.4)
    assert out == compute_tagging_metrics(scores, labels, thresholds=0.4)


def test_retrieval_module_equals_function():
    rng = np.random.default_rng(1)
    owner = np.repeat(np.arange(8), 3)
    t2i = rng.random((24, 8)).astype(np.float32)
    module = load_metric("retrieval")
    # One row per text (text -> image scores), one image index per text.
    out = module.compute(predictions=t2i, references=owner)
    assert out == compute_retrieval_metrics(t2i.T, owner)
    i2t = rng.random((8, 24)).astype(np.float32)
    separate = module.compute(predictions=t2i, references=owner, similarity_i2t=i2t)
    assert separate == compute_retrieval_metrics(i2t, owner, similarity_t2i=t2i)


def test_unknown_module_name():
    with pytest.raises(ValueError, match="unknown metric"):
        metric_path("bleu")


def test_wheel_ships_the_evaluate_modules(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("tag2text-*.whl"))).namelist()
    for name in MODULE_NAMES:
        assert f"tag2text/training/metrics/evaluate_modules/{name}/{name}.py" in names
    assert "tag2text/hub/score_captions_command.py" in names
