"""Shared pieces of the annotation tests: a tiny model directory, images, and an independent caption."""

from __future__ import annotations

import json
import os

import tiny_factory

GENERATE = {"num_beams": 1, "max_length": 9, "min_length": 9}
CLI_GENERATE = ["--num-beams", "1", "--max-length", "9"]


def model_dir(tmp_path, model, processor):
    directory = tmp_path / "model"
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def draw_folder(folder, count, start=0):
    """``count`` PNG images (lossless, so decoding a file gives the drawn pixels) in two sub-folders."""
    paths = []
    for index in range(start, start + count):
        path = folder / ("even" if index % 2 == 0 else "odd") / f"{index:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        tiny_factory.draw_image(index, size=(40 + index % 7, 36 + index % 5)).save(path)
        paths.append(path)
    return paths


def expected_row(model, processor, image, tags=None):
    """Tags, scores and caption computed through the model's own one-call API (generate from pixels)."""
    pixel_values = processor(images=image)["pixel_values"]
    tagged = model.tag(pixel_values)[0]
    kwargs = dict(GENERATE)
    if tags:
        kwargs.update(tags=[tags], tokenizer=processor.tokenizer)
    caption = processor.decode_captions(model.generate(pixel_values, **kwargs))[0]
    return {"tags": tagged.tags, "tag_scores": dict(zip(tagged.tags, tagged.scores)), "caption": caption}


def read_output(output_dir) -> list[dict]:
    """Every row of the complete shards (jsonl or parquet)."""
    from tag2text.hub.annotation_writer import complete_shards, read_rows

    rows = []
    for name in complete_shards(output_dir):
        rows.extend(read_rows(os.path.join(output_dir, name)))
    return rows


def manifest(output_dir) -> dict:
    with open(os.path.join(output_dir, "manifest.json"), encoding="utf-8") as handle:
        return json.load(handle)
