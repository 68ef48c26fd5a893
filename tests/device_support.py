"""Shared pieces of the device tests (tests/test_device_choice.py on the CPU, tests/test_gpu.py on CUDA): the
rows of the caption commands computed through the model's own API, batch by batch as the commands batch them."""

from __future__ import annotations

import contextlib

import torch
from PIL import Image

from annotate_support import GENERATE


def direct_rows(model, processor, image_paths, batch_size: int, autocast: str = "none", generate=None) -> list[dict]:
    """Tags, scores and captions of ``image_paths`` from ``model.tag`` and ``model.generate`` on the model's
    device, in batches of ``batch_size`` in the given order (the same batches give the same kernels), under
    ``torch.autocast`` in ``autocast`` unless "none"; ``generate``: its keywords (default: the tests' greedy
    9-token captions)."""
    device = model.device
    context = (torch.autocast(device.type, dtype=getattr(torch, autocast)) if autocast != "none"
               else contextlib.nullcontext())
    rows = []
    for start in range(0, len(image_paths), batch_size):
        images = [Image.open(path).convert("RGB") for path in image_paths[start : start + batch_size]]
        pixel_values = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
        with torch.no_grad(), context:
            tagged = model.tag(pixel_values)
            captions = processor.decode_captions(model.generate(pixel_values, **(generate or GENERATE)))
        for result, caption in zip(tagged, captions):
            rows.append({"tags": result.tags, "tag_scores": dict(zip(result.tags, result.scores)),
                         "caption": caption})
    return rows


def assert_rows_match(rows, expected, score_tolerance: float = 1e-5, captions: bool = True) -> None:
    """``rows`` (from a command) against ``expected`` (from :func:`direct_rows`), row by row."""
    assert len(rows) == len(expected)
    for index, (row, want) in enumerate(zip(rows, expected)):
        assert row.get("error") is None, (index, row)
        assert row["tags"] == want["tags"], index
        assert set(row["tag_scores"]) == set(want["tag_scores"]), index
        for name, score in want["tag_scores"].items():
            assert abs(row["tag_scores"][name] - score) <= score_tolerance, (index, name, row["tag_scores"][name],
                                                                             score)
        if captions:
            assert row["caption"] == want["caption"], index
