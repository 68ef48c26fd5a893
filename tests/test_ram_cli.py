"""RAM and RAM++ through the command line, on the tiny fixtures converted with ``tag2text convert``:

- ``tag2text caption`` writes {"image", "tags", "tags_zh", "tag_scores"} rows equal to ``model.tag`` (per-class
  thresholds, or ``--threshold`` for every tag) and to the original's tags in the fixture goldens; the caption
  options are refused in one line;
- ``--output-dir`` annotation runs write the same rows in shards, and resume;
- ``tag2text open-set`` (tiny CLIP text tower) writes a directory whose tags are the original's open-set tags, and
  refuses bad input in one line without writing anything;
- ``tag2text serve``: ``/v1/tags`` answers with English and Chinese tags, ``/v1/caption`` with a 400, the demo page
  shows both languages.
"""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from transformers import AutoModelForImageClassification, CLIPTextConfig, CLIPTextModelWithProjection

from ram_support import FIXTURE, convert
from tag2text import Tag2TextImageProcessor
from tag2text.hub.annotation_writer import read_rows
from tag2text.hub.cli import main as cli_main

GOLDEN = json.loads((FIXTURE / "golden.json").read_text(encoding="utf-8"))
IMAGES = [FIXTURE / "image0.png", FIXTURE / "image1.png"]
FAMILIES = ["ram", "ram_plus"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    directories = {}
    for family in FAMILIES:
        out = tmp_path_factory.mktemp(family) / "model"
        convert(family, out)
        directories[family] = out
    return directories


def model_tags(directory, threshold=None):
    """``model.tag`` on the fixture images, through the saved image processor: the independent side."""
    model = AutoModelForImageClassification.from_pretrained(directory).eval()
    processor = Tag2TextImageProcessor.from_pretrained(directory)
    pixel_values = processor(images=[Image.open(path).convert("RGB") for path in IMAGES],
                             return_tensors="pt")["pixel_values"]
    return model.tag(pixel_values, threshold=threshold)


def caption_rows(model_dir, tmp_path, *extra):
    output = tmp_path / f"rows{len(os.listdir(tmp_path))}.jsonl"
    assert cli_main(["--log-level", "WARNING", "caption", "--model", str(model_dir), *map(str, IMAGES),
                     "--output", str(output), *extra]) == 0
    return [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]


def assert_rows_match(rows, expected):
    assert len(rows) == len(expected)
    for row, output in zip(rows, expected):
        assert row["tags"] == output.tags and row["tags_zh"] == output.tags_zh
        assert list(row["tag_scores"]) == output.tags
        assert row["tag_scores"] == pytest.approx(dict(zip(output.tags, output.scores)), abs=2e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_caption_rows_are_model_tag_and_the_original_tags(converted, family, tmp_path):
    rows = caption_rows(converted[family], tmp_path, "--batch-size", "2")
    assert [list(row) for row in rows] == [["image", "tags", "tags_zh", "tag_scores"]] * 2
    assert [row["image"] for row in rows] == [str(path) for path in IMAGES]
    assert_rows_match(rows, model_tags(converted[family]))
    # The original's tags (per-class thresholds, the 1.0 classes never firing), English and Chinese strings.
    for row, case in zip(rows, ("img0", "img1")):
        golden = GOLDEN[family]["closed_set"][case]
        assert " | ".join(row["tags"]) == golden["english"][0]
        assert " | ".join(row["tags_zh"]) == golden["chinese"][0]
    # --threshold replaces every per-class value; one image per batch gives the same rows.
    at_half = caption_rows(converted[family], tmp_path, "--threshold", "0.5", "--batch-size", "1")
    expected = model_tags(converted[family], threshold=0.5)
    assert_rows_match(at_half, expected)
    assert [row["tags"] for row in at_half] != [row["tags"] for row in rows]


@pytest.mark.parametrize("option, value, words", [
    ("--tags", "dog | grass", "steering tags"),
    ("--num-beams", "3", "beams"),
    ("--max-length", "20", "length"),
])
def test_caption_options_of_a_decoder_are_refused(converted, option, value, words, tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    code = cli_main(["caption", "--model", str(converted["ram_plus"]), str(IMAGES[0]), option, value,
                     "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and not out.exists()
    assert err[0].startswith(f"tag2text caption: error: {option}:") and "RAM++" in err[0] and words in err[0]
    # The same for an annotation run, before anything is written.
    code = cli_main(["caption", "--model", str(converted["ram"]), str(IMAGES[0]), option, value,
                     "--output-dir", str(tmp_path / "shards")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"tag2text caption: error: {option}:") and "RAM model" in err[-1]
    assert not (tmp_path / "shards").exists()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_annotation_run_writes_the_same_rows_and_resumes(converted, fmt, tmp_path):
    model_dir = converted["ram_plus"]
    expected = caption_rows(model_dir, tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    for path in IMAGES:
        shutil.copy(path, images / path.name)
    out = tmp_path / "shards"
    run = ["--log-level", "WARNING", "caption", "--model", str(model_dir), str(images), "--output-dir", str(out),
           "--shard-size", "1", "--num-workers", "0", "--format", fmt]
    assert cli_main(run) == 0
    shards = sorted(name for name in os.listdir(out) if name.startswith("part-"))
    assert len(shards) == 2
    rows = [row for name in shards for row in read_rows(str(out / name))]
    assert [list(row) for row in rows] == [["key", "source", "tags", "tags_zh", "tag_scores", "error",
                                            "error_message"]] * 2
    for row, plain in zip(rows, expected):
        assert row["tags"] == plain["tags"] and row["tags_zh"] == plain["tags_zh"] and row["error"] is None
        assert row["tag_scores"] == pytest.approx(plain["tag_scores"], abs=1e-6)
    # Resume after losing a shard: only that image runs again, and the rows are the same.
    os.remove(out / shards[1])
    assert cli_main(run + ["--resume"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["annotated"] == 2 and manifest["runs"][-1]["images"] == 1
    again = sorted(name for name in os.listdir(out) if name.startswith("part-"))
    resumed = {row["key"]: row for name in again for row in read_rows(str(out / name))}
    assert [resumed[row["key"]]["tags_zh"] for row in rows] == [row["tags_zh"] for row in rows]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def golden_open_set_tags(family):
    """The original's open-set tags per image (golden.json holds each image's " | "-joined string)."""
    return [[name for name in GOLDEN[family]["open_set"][case]["english"][0].split(" | ") if name]
            for case in ("img0", "img1")]


def test_open_set_command_gives_the_original_open_set_tags(converted, tmp_path):
    # RAM++: the original's descriptions file; the tags are the original's open-set tags (golden).
    categories = GOLDEN["ram_plus"]["open_set"]["categories"]
    tags = write(tmp_path / "tags.txt", "\n".join(categories) + "\n")
    out = tmp_path / "ram-plus-open"
    assert cli_main(["--log-level", "WARNING", "open-set", "--model", str(converted["ram_plus"]), "--tags", str(tags),
                     "--descriptions", str(FIXTURE / "openset_llm_tag_descriptions.json"),
                     "--clip-model", str(FIXTURE / "clip_text"), "--output-dir", str(out)]) == 0
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert [config["id2label"][str(i)] for i in range(4)] == categories
    assert config["class_thresholds"] == [0.5] * 4 and config["descriptions_per_tag"] in (6, [6] * 4)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "# RAM++ image tagging (4 tags)" in card and "`tag2text open-set`" in card and "4 of them new" in card
    rows = caption_rows(out, tmp_path)
    assert [row["tags"] for row in rows] == golden_open_set_tags("ram_plus")
    assert_rows_match(rows, model_tags(out))
    assert all(row["tags_zh"] is None for row in rows)  # no Chinese names given, none invented

    # RAM, --add: the 30 converted tags keep their rows, the new ones come after them.
    categories = GOLDEN["ram"]["open_set"]["categories"]
    tags = write(tmp_path / "ram_tags.txt", "\n".join(categories))
    chinese = write(tmp_path / "ram_tags_zh.txt", "\n".join(f"新{i}" for i in range(len(categories))) + "\n")
    out = tmp_path / "ram-open"
    assert cli_main(["--log-level", "WARNING", "open-set", "--model", str(converted["ram"]), "--tags", str(tags),
                     "--tags-chinese", str(chinese), "--clip-model", str(FIXTURE / "clip_text"),
                     "--output-dir", str(out), "--add", "--threshold", "0.5"]) == 0
    closed = caption_rows(converted["ram"], tmp_path)
    rows = caption_rows(out, tmp_path)
    opened = golden_open_set_tags("ram")
    assert opened == [["cup/mug"], []]
    for row, old, new in zip(rows, closed, opened):
        assert row["tags"] == old["tags"] + new
        assert row["tags_zh"] == old["tags_zh"] + [f"新{categories.index(name)}" for name in new]
    assert_rows_match(rows, model_tags(out))


def narrow_clip(tmp_path):
    """The fixture CLIP tower with a 64-wide projection (not the label width 512)."""
    config = CLIPTextConfig.from_pretrained(FIXTURE / "clip_text")
    config.projection_dim = 64
    directory = tmp_path / "narrow_clip"
    CLIPTextModelWithProjection(config).save_pretrained(directory)
    for name in os.listdir(FIXTURE / "clip_text"):
        if name not in ("config.json", "model.safetensors"):
            shutil.copy(FIXTURE / "clip_text" / name, directory / name)
    return directory


def test_open_set_bad_inputs_are_one_line_and_write_nothing(converted, tmp_path, capsys):
    good_tags = write(tmp_path / "good.txt", "kayak\nlighthouse\n")
    cases = [
        ("ram_plus", {"--tags": write(tmp_path / "empty.txt", "\n  \n")}, r"--tags \S*empty.txt: .*no tag names"),
        ("ram_plus", {"--tags": write(tmp_path / "dup.txt", "kayak\nboat\nkayak\n")},
         r"--tags \S*dup.txt: 1 tag\(s\) appear more than once: 'kayak'"),
        ("ram_plus", {"--clip-model": narrow_clip(tmp_path)},
         r"--clip-model \S*narrow_clip: its projection width is 64, but .* 512 wide"),
        ("ram_plus", {"--descriptions": write(tmp_path / "dict.json", '{"kayak": ["a boat"]}')},
         r"--descriptions \S*dict.json: holds a JSON dict; the original's format"),
        ("ram_plus", {"--descriptions": write(tmp_path / "strings.json", '["kayak", "boat"]')},
         r"--descriptions \S*strings.json: entry 1 is not an object with one tag"),
        ("ram_plus", {"--descriptions": write(tmp_path / "texts.json", '[{"kayak": "a boat"}]')},
         r"--descriptions \S*texts.json: entry 1 \('kayak'\) is not a list of strings"),
        ("ram_plus", {"--descriptions": write(tmp_path / "broken.json", '[{"kayak": ["a boat"]')},
         r"--descriptions \S*broken.json: not a JSON file"),
        ("ram", {"--descriptions": FIXTURE / "openset_llm_tag_descriptions.json"},
         r"--descriptions \S*openset_llm_tag_descriptions.json: descriptions are a RAM\+\+ input"),
        ("ram", {"--tags": write(tmp_path / "old.txt", "cat\nkayak\n"), "--add": None},
         r"--tags \S*old.txt: with --add, tags the model already has: 'cat'"),
        ("ram", {"--tags-chinese": write(tmp_path / "zh.txt", "一\n")}, r"--tags-chinese \S*zh.txt: 1 names for the 2"),
        ("ram", {"--clip-model": tmp_path / "no_clip"}, r"--clip-model \S*no_clip: no CLIP directory at"),
    ]
    for number, (family, replace, pattern) in enumerate(cases):
        options = {"--model": converted[family], "--tags": good_tags, "--clip-model": FIXTURE / "clip_text",
                   "--output-dir": tmp_path / f"out{number}", **replace}
        argv = ["open-set"] + [item for option, value in options.items()
                               for item in ([option] if value is None else [option, str(value)])]
        code = cli_main(argv)
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert code == 2 and len(err) == 1, (pattern, err)
        assert re.search("tag2text open-set: error: " + pattern, err[0]), err[0]
        assert not (tmp_path / f"out{number}").exists()
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-open-set-")]
    # An output directory that holds files is refused, and left as it was.
    taken = tmp_path / "taken"
    write(taken.mkdir() or taken / "keep.txt", "mine")
    assert cli_main(["open-set", "--model", str(converted["ram"]), "--tags", str(good_tags), "--clip-model",
                     str(FIXTURE / "clip_text"), "--output-dir", str(taken)]) == 2
    assert "--output-dir" in capsys.readouterr().err and os.listdir(taken) == ["keep.txt"]


def test_serve_answers_tags_in_english_and_chinese(converted):
    from serving_support import RunningServer, png_bytes, post_image, request

    from tag2text.hub.inference import TaggingBackend
    from tag2text.hub.serving_model import ServingModel

    directory = converted["ram_plus"]
    loaded = ServingModel.load(str(directory))  # as `tag2text serve --model DIR` loads it
    assert isinstance(loaded.backend, TaggingBackend) and not loaded.writes_captions
    model, processor = loaded.model, loaded.processor
    expected = model_tags(directory)
    with RunningServer(model, processor, demo=True, max_image_pixels=1_000_000) as server:
        for path, output in zip(IMAGES, expected):
            code, answer = post_image(server.url + "/v1/tags", png_bytes(Image.open(path)))
            assert code == 200, answer
            assert list(answer) == ["tags", "tags_zh", "tag_scores"]
            assert answer["tags"] == output.tags and answer["tags_zh"] == output.tags_zh
            assert answer["tag_scores"] == pytest.approx(dict(zip(output.tags, output.scores)), abs=2e-5)
        code, answer = post_image(server.url + "/v1/tags", png_bytes(Image.open(IMAGES[0])), threshold="0.5")
        assert code == 200 and answer["tags"] == model_tags(directory, threshold=0.5)[0].tags
        code, answer = post_image(server.url + "/v1/caption", png_bytes(Image.open(IMAGES[0])))
        assert code == 400 and "only tags images" in answer["error"] and "/v1/tags" in answer["error"]
        code, health = request(server.url + "/health")
        assert code == 200 and health["model_type"] == "ram_plus" and health["writes_captions"] is False
        assert health["defaults"]["per_class_thresholds"] == 30 and health["defaults"]["num_beams"] is None
        code, page = request_text(server.url + "/")
        assert code == 200 and "Tags (Chinese)" in page and "Tags (English)" in page
        # The demo's own function gives the API's tags, Chinese names shown without their trailing spaces.
        functions = server.app.state.demo.fns
        functions = functions.values() if isinstance(functions, dict) else functions
        tag = next(function for function in functions if function.api_name == "tags")
        english, chinese, scores = tag.fn(str(IMAGES[0]), True, 0.5)
        assert english == " | ".join(expected[0].tags)
        assert chinese == " | ".join(name.strip() for name in expected[0].tags_zh)


def request_text(url):
    import urllib.request

    with urllib.request.urlopen(url, timeout=60) as response:
        return response.status, response.read().decode()


def test_torchrun_two_processes_write_each_key_once_with_the_single_process_rows(converted, tmp_path):
    import subprocess
    import sys

    model_dir = converted["ram"]
    images = tmp_path / "images"
    images.mkdir()
    for number in range(4):  # four keys: two per process
        Image.open(IMAGES[number % 2]).rotate(90 * (number // 2)).save(images / f"{number}.png")
    paths = sorted(images.iterdir())
    plain = tmp_path / "plain.jsonl"
    assert cli_main(["--log-level", "WARNING", "caption", "--model", str(model_dir), *map(str, paths),
                     "--output", str(plain)]) == 0
    expected = {Path(row["image"]).name: row for row in map(json.loads, plain.read_text().splitlines())}
    out = tmp_path / "shards"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "tag2text.hub.cli", "--log-level", "WARNING", "caption", "--model", str(model_dir),
                             str(images), "--output-dir", str(out), "--num-workers", "0"],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    shards = sorted(name for name in os.listdir(out) if name.startswith("part-"))
    assert [name[:15] for name in shards] == ["part-00000of000", "part-00001of000"]
    rows = [row for name in shards for row in read_rows(str(out / name))]
    assert sorted(Path(row["key"]).name for row in rows) == sorted(expected)
    for row in rows:
        plain_row = expected[Path(row["key"]).name]
        assert row["tags"] == plain_row["tags"] and row["tags_zh"] == plain_row["tags_zh"]
        assert row["tag_scores"] == pytest.approx(plain_row["tag_scores"], abs=1e-6)
    assert json.loads((out / "manifest.json").read_text())["runs"][-1]["processes"] == 2
