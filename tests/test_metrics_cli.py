"""``tag2text score-captions``: COCO and JSONL inputs, table and JSON output, bad files."""

import json

import pytest

from tag2text.hub.cli import main
from tag2text.training.metrics import METRIC_NAMES, compute_caption_metrics

IMAGES = [
    (7, "COCO_val2014_000000000007.jpg", ["A cat sitting on a red couch.", "a kitten resting on a sofa"]),
    (3, "COCO_val2014_000000000003.jpg", ["Two men playing frisbee in a park.", "people throw a disc on the grass"]),
    (5, "COCO_val2014_000000000005.jpg", ["A plate with a sandwich and fries.", "lunch served on a white plate"]),
    (9, "COCO_val2014_000000000009.jpg", ["A boat on a calm lake.", "a small boat floating on the water"]),
]
PREDICTIONS = {7: "A cat on a couch.", 3: "Two men throwing a frisbee.", 5: "A sandwich on a plate."}


@pytest.fixture
def no_java(monkeypatch, tmp_path):
    # METEOR and the Java tokenizer are exercised elsewhere; a PATH without java keeps this fast
    # and covers the no-Java behaviour for real.
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def _coco_files(tmp_path):
    gt = {
        "info": {},
        "images": [{"id": i, "file_name": f} for i, f, _ in IMAGES],
        "annotations": [
            {"image_id": i, "id": n, "caption": c}
            for n, (i, c) in enumerate((i, c) for i, _, caps in IMAGES for c in caps)
        ],
    }
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    res_path = tmp_path / "res.json"
    res_path.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in PREDICTIONS.items()]))
    return gt_path, res_path


def _expected():
    refs = {str(i): caps for i, _, caps in IMAGES}
    preds = {str(i): c for i, c in PREDICTIONS.items()}
    return compute_caption_metrics(refs, preds, tokenizer="python", meteor=False)


def test_coco_files_table_and_json(tmp_path, capsys, no_java):
    gt_path, res_path = _coco_files(tmp_path)
    out_path = tmp_path / "out" / "scores.json"
    rc = main(["score-captions", "--references", str(gt_path), "--predictions", str(res_path),
               "--output", str(out_path)])
    assert rc == 0
    table = capsys.readouterr().out
    for name in METRIC_NAMES:
        assert name in table
    assert "METEOR       n/a" in table
    assert "1 images without prediction (not scored)" in table
    written = json.loads(out_path.read_text())
    assert set(written) == {"corpus", "per_image", "info"}
    assert list(written["per_image"]) == ["7", "3", "5"]  # GT image order, image 9 has no prediction
    expected = _expected()
    assert written["corpus"]["METEOR"] is None
    for name in METRIC_NAMES:
        assert written["corpus"][name] == expected["corpus"][name]
        for image in ("7", "3", "5"):
            assert written["per_image"][image][name] == expected["per_image"][image][name]
    assert f"{100 * expected['corpus']['CIDEr']:.2f}" in table
    assert written["info"]["images_without_prediction"] == 1 and written["info"]["tokenizer"] == "python"


def test_jsonl_files_and_file_name_matching(tmp_path, no_java):
    refs = tmp_path / "refs.jsonl"
    lines = [{"image": i, "captions": caps} for i, _, caps in IMAGES[:2]]
    lines += [{"image_id": i, "caption": c} for i, _, caps in IMAGES[2:] for c in caps]  # one line per caption
    refs.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    preds = tmp_path / "preds.jsonl"
    preds.write_text("\n".join(json.dumps({"image": str(i), "caption": c}) for i, c in PREDICTIONS.items()))
    out_path = tmp_path / "scores.json"
    assert main(["score-captions", "--references", str(refs), "--predictions", str(preds),
                 "--output", str(out_path)]) == 0
    assert json.loads(out_path.read_text())["corpus"] == _expected()["corpus"]

    # Predictions keyed by image file name are matched through the COCO file's file_name field.
    gt_path, _ = _coco_files(tmp_path)
    by_name = tmp_path / "by_name.jsonl"
    names = {i: f for i, f, _ in IMAGES}
    by_name.write_text(
        "\n".join(json.dumps({"image": f"/data/{names[i]}", "caption": c}) for i, c in PREDICTIONS.items())
    )
    assert main(["score-captions", "--references", str(gt_path), "--predictions", str(by_name), "--output",
                 str(out_path)]) == 0
    written = json.loads(out_path.read_text())
    assert written["corpus"] == _expected()["corpus"] and written["info"]["matched_by_file_name"] == 3


def test_bad_files_fail_with_a_message(tmp_path, caplog, no_java):
    gt_path, _ = _coco_files(tmp_path)
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps([{"image_id": 7, "caption": "a cat"}, {"image_id": 7, "caption": "a dog"}]))
    assert main(["score-captions", "--references", str(gt_path), "--predictions", str(dup)]) == 1
    assert "1 duplicate prediction(s)" in caplog.text

    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([{"image_id": 7, "caption": "a cat"}, {"image_id": 12345, "caption": "a dog"}]))
    assert main(["score-captions", "--references", str(gt_path), "--predictions", str(unknown)]) == 1
    assert "images without references: '12345'" in caplog.text

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"image": 7, "caption": "a cat"}\n{"image": 3, "caption": \n')
    assert main(["score-captions", "--references", str(gt_path), "--predictions", str(broken)]) == 1
    assert "broken.jsonl:2" in caplog.text

    not_text = tmp_path / "not_text.json"
    not_text.write_text(json.dumps([{"image_id": 7, "caption": ["a cat"]}]))
    assert main(["score-captions", "--references", str(gt_path), "--predictions", str(not_text)]) == 1
    assert "caption must be a string" in caplog.text

    assert main(["score-captions", "--references", str(tmp_path / "missing.json"), "--predictions", str(dup)]) == 2
