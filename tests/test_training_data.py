"""Training data: the three layouts, tag resolution and mining, the collator, augmentation, bad images."""

import io
import json
import logging
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import training_support as support
from tag2text.training import (
    AugmentationConfig,
    BadImageError,
    DataFormatError,
    ImageLoader,
    Tag2TextCollator,
    TagList,
    TagResolver,
    TrainAugmentation,
    load_dataset,
    load_webdataset,
)
from tag2text.training.augmentation import random_resized_crop_box
from tag2text.training.data import expand_shards, read_annotation_json
from tag2text.training.model_setup import make_processor


def _png(color=(200, 30, 30), size=24) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, "PNG")
    return buffer.getvalue()


def _imagefolder(tmp_path, lines):
    for line in lines:
        if line.get("_write", True):
            (tmp_path / line["file_name"]).write_bytes(line.get("_bytes", _png()))
    (tmp_path / "metadata.jsonl").write_text(
        "\n".join(json.dumps({k: v for k, v in line.items() if not k.startswith("_")}) for line in lines) + "\n")
    return tmp_path


def test_imagefolder_captions_tags_and_missing_images(tmp_path, caplog):
    folder = _imagefolder(tmp_path, [
        {"file_name": "a.png", "caption": "a red square", "tags": ["red", "square"]},
        {"file_name": "b.png", "captions": ["a blue circle", "a circle"], "tags": "blue | circle"},
        {"file_name": "gone.png", "caption": "missing", "tags": ["red"], "_write": False},
    ])
    resolver = TagResolver()
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset(folder, resolver)
    assert len(dataset) == 2
    assert "gone.png" in caplog.text and "1 of 3 samples skipped" in caplog.text
    names = resolver.tag_list.names
    rows = [dataset[i] for i in range(2)]
    assert [sorted(names[i] for i in r["tag_ids"]) for r in rows] == [["red", "square"], ["blue", "circle"]]
    assert rows[1]["captions"] == ["a blue circle", "a circle"]
    assert rows[0]["caption_tag_ids"] == []  # image-level tags only
    with pytest.raises(BadImageError, match="gone.png"):
        load_dataset(folder, TagResolver(), fail_fast=True)


def test_metadata_errors_name_file_and_line(tmp_path):
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "caption": "x"}\n{not json}\n')
    with pytest.raises(DataFormatError, match=r"metadata.jsonl:2: not valid JSON"):
        load_dataset(tmp_path, TagResolver())
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png"}\n')
    with pytest.raises(DataFormatError, match=r"metadata.jsonl:1: no 'caption'"):
        load_dataset(tmp_path, TagResolver())
    with pytest.raises(DataFormatError, match="no such data directory"):
        load_dataset(tmp_path / "nowhere", TagResolver())


def test_original_json_layout_with_image_root(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "x.png").write_bytes(_png())
    (images / "y.png").write_bytes(_png())
    annotation = tmp_path / "ann.json"
    annotation.write_text(json.dumps([
        {"image_path": "x.png", "caption": ["a dog", "a brown dog"], "parse_label_id": [[0], [0, 2]]},
        {"image_path": "y.png", "caption": ["a cat"], "parse_label_id": [[1]]},
        {"image_path": "z.png", "caption": ["missing"], "parse_label_id": [[1]]},
    ]))
    with pytest.raises(ValueError, match="--tag-list"):
        load_dataset(annotation, TagResolver(), image_root=images)
    tags = TagList(["dog", "cat", "brown"])
    dataset = load_dataset(annotation, TagResolver(tags), image_root=images)
    assert len(dataset) == 2
    assert dataset[0]["tag_ids"] == [0, 2] and dataset[0]["caption_tag_ids"] == [[0], [0, 2]]
    annotation.write_text(json.dumps([{"image_path": "x.png", "caption": ["a"], "parse_label_id": [[7]]}]))
    with pytest.raises(DataFormatError, match=r"tag indices \[7\] outside the 3-tag list"):
        load_dataset(annotation, TagResolver(tags), image_root=images)
    annotation.write_text(json.dumps([{"image_path": "x.png", "caption": ["a", "b"], "parse_label_id": [[0]]}]))
    with pytest.raises(DataFormatError, match=r"ann.json\[0\]: 'parse_label_id' must hold one list"):
        read_annotation_json(annotation, images)


def _write_shard(path, samples):
    with tarfile.open(path, "w") as tar:
        for key, parts in samples:
            for suffix, data in parts.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _meta(caption, tags):
    return json.dumps({"caption": caption, "tags": tags}).encode()


def test_webdataset_streams_shards_reproducibly_and_skips_bad_samples(tmp_path, caplog):
    colours = ["red", "blue", "green"]
    for shard in range(2):
        samples = []
        for i in range(5):
            colour = colours[(shard + i) % 3]
            image = b"not an image" if (shard, i) == (1, 2) else _png()
            samples.append((f"s{shard}_{i}", {"png": image, "json": _meta(f"a {colour} square", [colour, "square"])}))
        samples.append((f"s{shard}_caption_only", {"txt": b"a caption without image"}))
        _write_shard(tmp_path / f"shard-{shard:05d}.tar", samples)
    assert len(expand_shards(str(tmp_path / "shard-{00000..00001}.tar"))) == 2
    resolver = TagResolver()
    with caplog.at_level(logging.WARNING):
        source = load_webdataset(str(tmp_path / "shard-{00000..00001}.tar"), resolver, seed=1, shuffle_buffer=4)
    assert "has no image" in caplog.text
    assert source.num_samples == 10

    def keys(epoch):
        source.set_epoch(epoch)
        return [r["image"]["path"] for r in source]

    first = keys(0)
    assert len(first) == 10 and len(set(first)) == 10
    assert keys(0) == first  # reproducible
    assert keys(1) != first  # reshuffled per epoch
    names = resolver.tag_list.names
    assert sorted(names) == ["blue", "green", "red", "square"]
    for record in source:
        colour = record["captions"][0].split()[1]
        assert sorted(names[i] for i in record["tag_ids"]) == sorted([colour, "square"])

    tokenizer = support.caption_tokenizer(tmp_path, ["a red blue green square caption"])
    processor = make_processor(tokenizer, support.tiny_model(tokenizer, names).config)
    loader = ImageLoader()
    collator = Tag2TextCollator(processor, names, image_loader=loader)
    records = list(source)
    batch = collator(records)
    assert batch["pixel_values"].shape[0] == 9  # the corrupt image is skipped ...
    assert collator.image_load_failures == 1  # ... and counted on the collator, not in the batch
    assert "image_load_failures" not in batch
    assert loader.failures["corrupt"] == 1
    with pytest.raises(BadImageError, match="s1_2.png"):
        Tag2TextCollator(processor, names, image_loader=ImageLoader(fail_fast=True))(records)


def test_tags_mined_from_captions_once_and_cached_beside_the_data(tmp_path):
    split = support.synthetic_split(tmp_path / "data", 6, seed=3)
    resolver = TagResolver()
    dataset = load_dataset(split, resolver)
    names = resolver.tag_list.names
    truth = [json.loads(line)["objects"] for line in (split / "metadata.jsonl").read_text().splitlines()]
    for row, objects in zip(dataset, truth):
        mined = {names[i] for i in row["tag_ids"]}
        assert {o["shape"] for o in objects} | {o["colour"] for o in objects} <= mined
        assert len(row["caption_tag_ids"]) == len(row["captions"])  # per-caption tags kept
    cached = list((split / ".tag2text-cache").glob("typed-*.json"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    again = TagResolver()
    load_dataset(split, again)
    assert again.tag_list.names == names
    assert cached[0].stat().st_mtime_ns == stamp  # read, not mined and written again


@pytest.fixture(scope="module")
def collate_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("collate")
    dataset, tag_list = support.tagged_dataset(root / "data", 8, seed=5)
    tokenizer = support.caption_tokenizer(root, [c for cs in dataset["captions"] for c in cs] + tag_list.names)
    model = support.tiny_model(tokenizer, tag_list.names)
    return dataset, tag_list, make_processor(tokenizer, model.config)


def test_collator_builds_labels_tags_and_alignment_text(collate_setup):
    dataset, tag_list, processor = collate_setup
    records = [dataset[i] for i in range(4)]
    batch = Tag2TextCollator(processor, tag_list.names, shuffle_tags=False, random_caption=False)(records)
    tokenizer = processor.tokenizer
    for row, record in enumerate(records):
        assert torch.nonzero(batch["tag_targets"][row]).flatten().tolist() == sorted(record["tag_ids"])
        tag_text = tokenizer.decode(batch["tag_input_ids"][row], skip_special_tokens=True)
        assert tag_text.split(" | ") == [tag_list.names[i] for i in sorted(record["tag_ids"])]  # class order
        caption = tokenizer.decode(batch["text_input_ids"][row], skip_special_tokens=True)
        assert caption == record["captions"][0]
    assert (batch["text_input_ids"][:, 0] == tokenizer.cls_token_id).all()
    assert (batch["input_ids"][:, 0] == processor.dec_token_id).all()
    assert (batch["tag_input_ids"][:, 0] == processor.enc_token_id).all()
    assert batch["sample_ids"].tolist() == [r["image_id"] for r in records]


def test_tag_shuffling_is_per_sample_and_epoch_and_reproducible(collate_setup):
    dataset, tag_list, processor = collate_setup
    records = [dataset[i] for i in range(8)]
    collator = Tag2TextCollator(processor, tag_list.names, shuffle_tags=True, seed=11)

    def orders(epoch):
        collator.epoch = epoch
        ids = collator(records)["tag_input_ids"]
        return [processor.tokenizer.decode(row, skip_special_tokens=True) for row in ids]

    epoch0 = orders(0)
    assert orders(0) == epoch0
    assert orders(1) != epoch0
    in_class_order = [" | ".join(tag_list.names[i] for i in sorted(r["tag_ids"])) for r in records]
    assert epoch0 != in_class_order  # some sample's tags were reordered
    assert [sorted(t.split(" | ")) for t in epoch0] == [sorted(t.split(" | ")) for t in in_class_order]


def test_corrupt_image_is_counted_logged_and_skipped(collate_setup, tmp_path, caplog):
    dataset, tag_list, processor = collate_setup
    records = [dataset[i] for i in range(3)]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    records[1] = dict(records[1], image=str(broken))
    loader = ImageLoader()
    collator = Tag2TextCollator(processor, tag_list.names, image_loader=loader)
    with caplog.at_level(logging.WARNING):
        batch = collator(records)
    assert batch["pixel_values"].shape[0] == 2 and collator.image_load_failures == 1
    assert "broken.png" in caplog.text and loader.summary()["skipped_corrupt"] == 1
    with pytest.raises(BadImageError, match="broken.png"):
        Tag2TextCollator(processor, tag_list.names, image_loader=ImageLoader(fail_fast=True))(records)


def test_image_cache_decodes_each_file_once_up_to_its_limit_and_batches_stay_the_same(collate_setup, tmp_path):
    dataset, tag_list, processor = collate_setup
    records = [dataset[i] for i in range(6)]
    plain = Tag2TextCollator(processor, tag_list.names, image_loader=ImageLoader())
    # Room for the first three of these 6 same-sized images, not the fourth.
    size = Image.open(records[0]["image"]).size
    limit = 3.5 * 3 * size[0] * size[1] / 2**20
    loader = ImageLoader(cache_megabytes=limit)
    cached = Tag2TextCollator(processor, tag_list.names, image_loader=loader)
    expected = plain(records)
    for _ in range(3):  # epochs
        batch = cached(records)
        for key, value in expected.items():
            assert torch.equal(batch[key], value), key
    summary = loader.summary()
    assert summary["cached_images"] == 3 and summary["cache_hits"] == 3 * 2 and summary["loaded"] == 18
    # A file that later goes missing is still reported missing when it was not cached.
    uncached = tmp_path / "late.png"
    Image.open(records[5]["image"]).save(uncached)
    assert loader.load(str(uncached)) is not None
    uncached.unlink()
    assert loader.load(str(uncached)) is None and loader.failures["missing"] == 1
    with pytest.raises(ValueError, match="cache_megabytes"):
        ImageLoader(cache_megabytes=-1)


def test_augmentation_is_seeded_and_switchable():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    augment = TrainAugmentation(32)
    a = augment(image, np.random.default_rng([1, 2, 3]))
    b = augment(image, np.random.default_rng([1, 2, 3]))
    assert a.size == (32, 32) and np.array_equal(np.asarray(a), np.asarray(b))
    assert TrainAugmentation(32, AugmentationConfig.disabled())(image, np.random.default_rng(0)) is image
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(500):
        left, top, w, h = random_resized_crop_box(60, 40, (0.2, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= left and 0 <= top and left + w <= 60 and top + h <= 40
        areas.append(w * h / 2400)
    assert min(areas) >= 0.19 and max(areas) <= 1.0 and np.mean(areas) > 0.4
    flip_only = TrainAugmentation(32, AugmentationConfig(crop_scale=None, randaug_num_ops=0))
    mirrored = [np.array_equal(np.asarray(flip_only(image, np.random.default_rng(s))), np.asarray(ImageOps.mirror(image)))
                for s in range(200)]
    assert 0.35 < np.mean(mirrored) < 0.65
