"""`tag2text caption --output-dir`: one process, every input kind, bad images, resume, usage errors."""

import io
import json
import os
import tarfile

import pytest
from PIL import Image

import tiny_factory
from annotate_support import CLI_GENERATE, draw_folder, expected_row, manifest, model_dir, read_output
from tag2text.hub import annotation_run
from tag2text.hub.cli import build_parser, main
from tag2text.hub.cli_args import UsageError
from tag2text.hub.model_source import ModelSourceError


def _caption(*argv):
    return main(["caption", *map(str, argv)])


def _args(*argv):
    return build_parser("caption").parse_args(["caption", *map(str, argv)])


def _assert_matches(row, expected):
    assert row["error"] is None
    assert row["tags"] == expected["tags"]
    assert row["caption"] == expected["caption"]
    assert set(row["tag_scores"]) == set(expected["tag_scores"])
    for name, score in expected["tag_scores"].items():
        assert row["tag_scores"][name] == pytest.approx(score, abs=1e-5)


def test_folder_with_bad_images(tmp_path, model, processor):
    directory = model_dir(tmp_path, model, processor)
    images = tmp_path / "images"
    paths = draw_folder(images, 5)
    (images / "unreadable.png").write_bytes(b"not an image")
    encoded = io.BytesIO()
    tiny_factory.draw_image(9).save(encoded, "PNG")
    (images / "truncated.png").write_bytes(encoded.getvalue()[: len(encoded.getvalue()) // 2])
    tiny_factory.draw_image(10, size=(80, 80)).save(images / "large.png")  # 6,400 pixels, above the limit below
    out = tmp_path / "out"
    status = _caption("--model", directory, images, "--output-dir", out, "--shard-size", 3,
                      "--batch-size", 2, "--max-image-pixels", 4000, *CLI_GENERATE)
    assert status == 1
    rows = read_output(out)
    by_key = {row["key"]: row for row in rows}
    assert len(rows) == len(by_key) == 8
    assert sorted(os.listdir(out)) == ["manifest.json"] + [f"part-00000of00001-0000{i}.jsonl" for i in range(3)]
    for path in paths:
        _assert_matches(by_key[path.relative_to(images).as_posix()], expected_row(model, processor, str(path)))
    assert by_key["unreadable.png"]["error"] == "unreadable"
    assert by_key["truncated.png"]["error"] == "truncated"
    assert by_key["large.png"]["error"] == "too large" and "80x80" in by_key["large.png"]["error_message"]
    summary = manifest(out)
    assert summary["failures_by_reason"] == {"too large": 1, "truncated": 1, "unreadable": 1}
    assert (summary["inputs"], summary["annotated"], summary["failed"], summary["missing"]) == (8, 5, 3, 0)
    assert summary["complete"] and summary["model"] == str(directory) and summary["options"]["batch_size"] == 2
    assert summary["runs"][0]["images"] == 8 and summary["runs"][0]["processes"] == 1


def test_tags_steer_and_success_status(tmp_path, model, processor):
    directory = model_dir(tmp_path, model, processor)
    paths = draw_folder(tmp_path / "images", 2)
    out = tmp_path / "out"
    assert _caption("--model", directory, tmp_path / "images", "--output-dir", out, "--tags", "dog | sky",
                    "--num-workers", 0, *CLI_GENERATE) == 0
    rows = {row["key"]: row for row in read_output(out)}
    for path in paths:
        expected = expected_row(model, processor, str(path), tags="dog | sky")
        row = rows[path.relative_to(tmp_path / "images").as_posix()]
        assert row["tags"] == ["dog", "sky"] and row["caption"] == expected["caption"]
        assert set(row["tag_scores"]) == set(expected["tag_scores"])


def test_resume_annotates_only_what_is_missing(tmp_path, model, processor):
    directory = model_dir(tmp_path, model, processor)
    draw_folder(tmp_path / "images", 6)
    out = tmp_path / "out"
    common = ["--model", directory, tmp_path / "images", "--output-dir", out, "--shard-size", 2, *CLI_GENERATE]
    assert _caption(*common) == 0
    first = {row["key"]: row for row in read_output(out)}
    # Mark a kept shard, lose another (as a killed run would never have renamed it), leave a half shard.
    kept, lost = out / "part-00000of00001-00000.jsonl", out / "part-00000of00001-00002.jsonl"
    marked = [dict(json.loads(line), caption="kept as it was") for line in kept.read_text().splitlines()]
    kept.write_text("".join(json.dumps(row) + "\n" for row in marked))
    lost_keys = {json.loads(line)["key"] for line in lost.read_text().splitlines()}
    lost.unlink()
    (out / ".tmp-part-00000of00001-00002.jsonl").write_text('{"key": "half')

    with pytest.raises(UsageError, match="--resume"):
        annotation_run.run_sharded(_args(*common))
    assert _caption(*common, "--resume") == 0
    rows = read_output(out)
    by_key = {row["key"]: row for row in rows}
    assert len(rows) == len(by_key) == 6
    assert {row["key"] for row in marked} <= {k for k, r in by_key.items() if r["caption"] == "kept as it was"}
    for key in lost_keys:
        assert by_key[key]["caption"] == first[key]["caption"]
    assert not [name for name in os.listdir(out) if name.startswith(".tmp-")]
    summary = manifest(out)
    assert [run["images"] for run in summary["runs"]] == [6, 2] and summary["runs"][1]["resumed"]
    assert summary["rows"] == 6 and summary["complete"]


def _write_parquet(path, images):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cells = []
    for image in images:
        if image is None or isinstance(image, str):
            cells.append(None if image is None else {"bytes": None, "path": image})
            continue
        encoded = io.BytesIO()
        image.save(encoded, "PNG")
        cells.append({"bytes": encoded.getvalue(), "path": None})
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"id": [f"img-{i}" for i in range(len(images))], "img": pa.array(cells, type=image_type)})
    pq.write_table(table, path, row_group_size=2)


def test_parquet_in_parquet_out(tmp_path, model, processor):
    directory = model_dir(tmp_path, model, processor)
    images = [tiny_factory.draw_image(i) for i in range(4)] + [None, "nowhere.png"]
    _write_parquet(tmp_path / "data.parquet", images)
    out = tmp_path / "out"
    assert _caption("--model", directory, "--parquet", tmp_path / "data.parquet", "--image-column", "img",
                    "--output-dir", out, "--format", "parquet", "--batch-size", 3, *CLI_GENERATE) == 1
    rows = {row["key"]: row for row in read_output(out)}
    assert sorted(rows) == [f"{tmp_path / 'data.parquet'}:{i}" for i in range(6)]
    for index, image in enumerate(images[:4]):
        _assert_matches(rows[f"{tmp_path / 'data.parquet'}:{index}"], expected_row(model, processor, image))
    assert rows[f"{tmp_path / 'data.parquet'}:4"]["error"] == "unreadable"
    assert rows[f"{tmp_path / 'data.parquet'}:5"]["error"] == "missing"
    assert manifest(out)["failures_by_reason"] == {"missing": 1, "unreadable": 1}
    assert sorted(os.listdir(out)) == ["manifest.json", "part-00000of00001-00000.parquet"]

    keyed = tmp_path / "keyed"
    assert _caption("--model", directory, "--parquet", tmp_path / "data.parquet", "--image-column", "img",
                    "--key-column", "id", "--output-dir", keyed, *CLI_GENERATE) == 1
    assert sorted(row["key"] for row in read_output(keyed)) == [f"img-{i}" for i in range(6)]


def _write_shard(path, samples):
    with tarfile.open(path, "w") as archive:
        for key, suffix, data in samples:
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _png(image):
    encoded = io.BytesIO()
    image.save(encoded, "PNG")
    return encoded.getvalue()


def test_webdataset_shards_with_a_brace_pattern(tmp_path, model, processor):
    directory = model_dir(tmp_path, model, processor)
    images = {f"sample{i:02d}": tiny_factory.draw_image(20 + i) for i in range(5)}
    keys = list(images)
    _write_shard(tmp_path / "data-000000.tar", [(k, s, d) for k in keys[:3] for s, d in
                                                  (("png", _png(images[k])), ("json", b'{"caption": "x"}'))])
    _write_shard(tmp_path / "data-000001.tar", [(k, "png", _png(images[k])) for k in keys[3:]]
                 + [("broken", "jpg", b"\xff\xd8 not a jpeg")])
    out = tmp_path / "out"
    status = _caption("--model", directory, "--shards", str(tmp_path / "data-{000000..000001}.tar"),
                      "--output-dir", out, "--batch-size", 2, *CLI_GENERATE)
    assert status == 1
    rows = {row["key"]: row for row in read_output(out)}
    assert sorted(rows) == sorted(keys + ["broken"])
    for key, image in images.items():
        _assert_matches(rows[key], expected_row(model, processor, image))
    assert rows["broken"]["error"] == "unreadable"
    assert rows["sample03"]["source"].endswith("data-000001.tar:sample03.png")

    gz = tmp_path / "packed.tar"
    with tarfile.open(gz, "w:gz") as archive:
        info = tarfile.TarInfo("a.png")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(UsageError, match="not an uncompressed tar"):
        annotation_run.run_sharded(_args("--model", directory, "--shards", gz, "--output-dir", tmp_path / "o2"))


def test_save_to_disk_and_imagefolder_datasets(tmp_path, model, processor):
    import datasets

    from tag2text.hub.annotation_sources import dataset_items, read_item

    directory = model_dir(tmp_path, model, processor)
    images = [tiny_factory.draw_image(30 + i) for i in range(3)]
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"picture": images}, features=datasets.Features({"picture": datasets.Image()})) \
        .save_to_disk(str(saved))
    out = tmp_path / "out"
    assert _caption("--model", directory, "--dataset", saved, "--image-column", "picture", "--output-dir", out,
                    *CLI_GENERATE) == 0
    rows = {row["key"]: row for row in read_output(out)}
    assert sorted(rows) == ["0", "1", "2"]
    for index, image in enumerate(images):
        _assert_matches(rows[str(index)], expected_row(model, processor, image))

    folder = tmp_path / "folder"
    for split in ("train", "test"):
        draw_folder(folder / split, 2)
    items, tables = dataset_items(str(folder), "image", None, cache_dir=str(tmp_path / "cache"))
    assert sorted(item.key for item in items) == ["test/0", "test/1", "train/0", "train/1"]
    path, data = read_item(items[0], tables)
    decoded = Image.open(path) if path else Image.open(io.BytesIO(data))
    assert decoded.size in {image.size for image in map(Image.open, folder.rglob("*.png"))}


def test_usage_errors(tmp_path, model, processor):
    directory = model_dir(tmp_path, model, processor)
    draw_folder(tmp_path / "a", 1)
    draw_folder(tmp_path / "b", 1)
    cases = [
        (["--model", directory], "give image files"),
        (["--model", directory, "--shards", tmp_path / "x.tar"], "give --output-dir"),
        (["--model", directory, tmp_path / "a", "--output-dir", tmp_path / "o", "--output", tmp_path / "f"],
         "--output"),
        (["--model", directory, tmp_path / "a", tmp_path / "b", "--output-dir", tmp_path / "o"], "000.png"),
        (["--model", directory, tmp_path / "gone.png", "--output-dir", tmp_path / "o"], "no such file"),
        (["--model", directory, "--output-dir", tmp_path / "o", "--parquet", tmp_path / "a" / "even" / "000.png"],
         "parquet"),
    ]
    for argv, message in cases:
        with pytest.raises(UsageError, match=message):
            annotation_run.run_sharded(_args(*argv))
    with pytest.raises(ModelSourceError, match="no model directory"):
        annotation_run.run_sharded(_args("--model", tmp_path / "no_model", tmp_path / "a",
                                         "--output-dir", tmp_path / "o"))
    with pytest.raises(SystemExit):
        _args("--model", directory, tmp_path / "a", "--output-dir", tmp_path / "o", "--shard-size", "0")


def test_bfloat16_autocast_and_device_errors(tmp_path, model, processor):
    import torch

    directory = model_dir(tmp_path, model, processor)
    paths = draw_folder(tmp_path / "images", 3)
    out = tmp_path / "out"
    assert _caption("--model", directory, tmp_path / "images", "--output-dir", out, "--autocast", "bfloat16",
                    "--num-workers", 0, *CLI_GENERATE) == 0
    rows = read_output(out)
    assert sorted(row["key"] for row in rows) == sorted(p.relative_to(tmp_path / "images").as_posix() for p in paths)
    assert all(row["error"] is None and row["caption"] for row in rows)
    assert manifest(out)["options"]["autocast"] == "bfloat16"
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            annotation_run.run_sharded(_args("--model", directory, tmp_path / "images", "--output-dir",
                                             tmp_path / "gpu", "--device", "cuda"))
    with pytest.raises(UsageError, match="float16 needs a GPU"):
        annotation_run.run_sharded(_args("--model", directory, tmp_path / "images", "--output-dir", tmp_path / "f16",
                                         "--autocast", "float16"))
