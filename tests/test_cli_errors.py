"""Bad command-line values, as a user types them: one line on stderr naming the option and the value, exit
status 2, no traceback, and nothing loaded or written before the check."""

import json
import os
import subprocess
import sys

import pytest
import torch

import tiny_factory

OFFLINE = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    tokenizer = tiny_factory.make_tokenizer(root)
    model = tiny_factory.make_model(tiny_factory.make_config(tokenizer))
    model.save_pretrained(root / "model")
    tiny_factory.make_processor(tokenizer).save_pretrained(root / "model")
    tiny_factory.draw_image(0).save(root / "image.png")
    (root / "no_config").mkdir()
    (root / "captions.txt").write_text("a red dog on the grass\n", encoding="utf-8")
    (root / "data").mkdir()
    tiny_factory.draw_image(1).save(root / "data" / "0.png")
    (root / "data" / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png", "caption": "a red cat"}) + "\n")
    return root


def run_cli(arguments, cwd):
    return subprocess.run([sys.executable, "-m", "tag2text.hub.cli", *arguments], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=OFFLINE)


def _cuda_value():
    # Whatever this machine has, the value names a CUDA device that is not there.
    return "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"


# (arguments with {root} for the fixture folder, words the one error line must hold: the option and the value)
CASES = {
    "caption-missing-model-dir": (["caption", "--model", "nosuch_dir", "{root}/image.png"],
                                  ["--model", "nosuch_dir", "no model directory"]),
    "caption-missing-relative-path": (["caption", "--model", "./models/t2t", "{root}/image.png"],
                                      ["--model", "./models/t2t", "no model directory"]),
    "caption-repo-id-offline-not-cached": (["caption", "--model", "someone/no-such-tag2text", "{root}/image.png"],
                                           ["--model", "someone/no-such-tag2text", "could not load"]),
    "caption-model-is-a-file": (["caption", "--model", "{root}/image.png", "{root}/image.png"],
                                ["--model", "image.png", "is a file"]),
    "caption-dir-without-config": (["caption", "--model", "{root}/no_config", "{root}/image.png"],
                                   ["--model", "no_config", "config.json"]),
    "caption-num-beams-0": (["caption", "--model", "{root}/model", "{root}/image.png", "--num-beams", "0"],
                            ["--num-beams", "0"]),
    "caption-device-without-cuda": (["caption", "--model", "{root}/model", "{root}/image.png", "--device",
                                     _cuda_value()], ["--device", _cuda_value()]),
    "caption-device-unknown": (["caption", "--model", "{root}/model", "{root}/image.png", "--device", "tpu"],
                               ["--device", "tpu"]),
    "caption-max-length-3": (["caption", "--model", "{root}/model", "{root}/image.png", "--max-length", "3"],
                             ["--max-length", "3", "at least 5"]),
    "caption-batch-size-0": (["caption", "--model", "{root}/model", "{root}/image.png", "--batch-size", "0"],
                             ["--batch-size", "0"]),
    "caption-batch-size-negative": (["caption", "--model", "{root}/model", "{root}/image.png", "--batch-size", "-4"],
                                    ["--batch-size", "-4"]),
    "caption-threshold-above-1": (["caption", "--model", "{root}/model", "{root}/image.png", "--threshold", "1.5"],
                                  ["--threshold", "1.5"]),
    "caption-threshold-negative": (["caption", "--model", "{root}/model", "{root}/image.png", "--threshold", "-0.1"],
                                   ["--threshold", "-0.1"]),
    "caption-missing-image": (["caption", "--model", "{root}/model", "{root}/missing.png"],
                              ["images", "missing.png", "no such file"]),
    "caption-output-under-a-file": (["caption", "--model", "{root}/model", "{root}/image.png", "--output",
                                     "{root}/image.png/out/c.jsonl"],
                                    ["--output", "image.png/out/c.jsonl", "is a file"]),
    "caption-output-is-a-folder": (["caption", "--model", "{root}/model", "{root}/image.png", "--output", "{root}"],
                                   ["--output", "is a directory"]),
    "caption-no-images-in-dir": (["caption", "--model", "{root}/model", "{root}/no_config"],
                                 ["images", "no_config", "no image files"]),
    "evaluate-missing-model": (["evaluate", "--model", "nosuch_dir", "--data-dir", "{root}/data"],
                               ["--model", "nosuch_dir", "no model directory"]),
    "evaluate-missing-data": (["evaluate", "--model", "{root}/model", "--data-dir", "{root}/heldout"],
                              ["--data-dir", "heldout"]),
    "evaluate-batch-size-0": (["evaluate", "--model", "{root}/model", "--data-dir", "{root}/data", "--batch-size",
                               "0"], ["--batch-size", "0"]),
    "evaluate-unknown-task": (["evaluate", "--model", "{root}/model", "--data-dir", "{root}/data", "--tasks",
                               "tagging,vqa"], ["--tasks", "tagging,vqa"]),
    "evaluate-output-under-a-file": (["evaluate", "--model", "{root}/model", "--data-dir", "{root}/data",
                                      "--output", "{root}/image.png/m.json"],
                                     ["--output", "image.png/m.json", "is a file"]),
    "evaluate-device-without-cuda": (["evaluate", "--model", "{root}/model", "--data-dir", "{root}/data",
                                      "--device", _cuda_value()], ["--device", _cuda_value()]),
    "convert-missing-checkpoint": (["convert", "--checkpoint", "{root}/nope.pth", "--output-dir", "{root}/out"],
                                   ["--checkpoint", "nope.pth", "no such file"]),
    "convert-threshold-2": (["convert", "--threshold", "2", "--output-dir", "{root}/out"], ["--threshold", "2"]),
    "convert-class-threshold-above-1": (["convert", "--class-threshold", "5=1.5", "--output-dir", "{root}/out"],
                                        ["--class-threshold", "5=1.5"]),
    "convert-output-dir-is-a-file": (["convert", "--output-dir", "{root}/image.png"], ["--output-dir", "image.png"]),
    "convert-missing-tokenizer-dir": (["convert", "--tokenizer", "./bert/vocab.txt", "--output-dir", "{root}/out"],
                                      ["--tokenizer", "./bert/vocab.txt"]),
    "push-missing-model-dir": (["push", "--model-dir", "{root}/nope", "--repo-id", "me/t2t"], ["--model-dir", "nope"]),
    "push-bad-repo-id": (["push", "--model-dir", "{root}/model", "--repo-id", "a/b/c"], ["--repo-id", "a/b/c"]),
    "mine-tags-missing-captions": (["mine-tags", "--captions", "{root}/nope.txt", "--output", "{root}/t.jsonl"],
                                   ["--captions", "nope.txt"]),
    "mine-tags-batch-size-0": (["mine-tags", "--captions", "{root}/captions.txt", "--output", "{root}/t.jsonl",
                                "--batch-size", "0"], ["--batch-size", "0"]),
    "mine-tags-output-under-a-file": (["mine-tags", "--captions", "{root}/captions.txt", "--output",
                                       "{root}/image.png/t.jsonl"],
                                      ["--output", "image.png/t.jsonl", "is a file"]),
    "build-tag-list-output-under-a-file": (["build-tag-list", "--captions", "{root}/captions.txt", "--top-k", "5",
                                            "--output", "{root}/image.png/tags.txt"],
                                           ["--output", "image.png/tags.txt", "is a file"]),
    "score-captions-output-under-a-file": (["score-captions", "--references", "{root}/captions.txt", "--predictions",
                                            "{root}/captions.txt", "--output", "{root}/image.png/s.json"],
                                           ["--output", "image.png/s.json", "is a file"]),
    "build-tag-list-top-k-0": (["build-tag-list", "--captions", "{root}/captions.txt", "--top-k", "0", "--output",
                                "{root}/tags.txt"], ["--top-k", "0"]),
    "score-captions-missing-references": (["score-captions", "--references", "{root}/refs.json", "--predictions",
                                           "{root}/captions.txt"], ["--references", "refs.json"]),
    "unknown-command-option": (["caption", "--model", "{root}/model", "{root}/image.png", "--beams", "2"],
                               ["--beams"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_value_is_one_line_naming_option_and_value(name, files, tmp_path):
    arguments, words = CASES[name]
    arguments = [a.replace("{root}", str(files)) for a in arguments]
    result = run_cli(arguments, cwd=tmp_path)
    command = arguments[0]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"tag2text {command}: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (files / "out").exists() and not (tmp_path / "metrics.json").exists()


def test_help_exits_0_and_shows_defaults(capsys):
    from tag2text.hub.cli import main

    assert main(["caption", "--help"]) == 0
    text = capsys.readouterr().out
    assert "(default: 8)" in text and "(default: cpu)" in text
    assert main(["evaluate", "--help"]) == 0
    assert "(default: metrics.json)" in capsys.readouterr().out


def test_output_files_get_their_missing_folders(files, tmp_path):
    """One convention for every command's output file: a missing folder is created when the file is written
    (an existing file in the way is refused, above)."""
    captions = tmp_path / "new" / "deeper" / "captions.jsonl"
    result = run_cli(["caption", "--model", str(files / "model"), str(files / "image.png"), "--output",
                      str(captions)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [json.loads(line)["image"] for line in captions.read_text().splitlines()] == [str(files / "image.png")]
    metrics = tmp_path / "report" / "m.json"
    result = run_cli(["evaluate", "--model", str(files / "model"), "--data-dir", str(files / "data"), "--tasks",
                      "tagging", "--output", str(metrics)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(metrics.read_text())["metrics"]["num_images"] == 1
