"""The README's caption, evaluate and convert commands, run as written (taken from README.md), offline, in a
folder where the paths they name hold tiny models and images these tests make; no --tokenizer anywhere."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import tiny_factory

README = Path(__file__).resolve().parents[1] / "README.md"
OFFLINE = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def readme_command(prefix: str) -> list[str]:
    """The first command line of the README that starts with ``prefix`` (continuation lines joined)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if line.startswith(prefix):
            text = line
            while text.rstrip().endswith("\\"):
                index += 1
                text = text.rstrip()[:-1] + " " + lines[index]
            return shlex.split(text, comments=True)
    raise AssertionError(f"README.md has no command starting with {prefix!r}")


def option(arguments: list[str], name: str) -> str:
    return arguments[arguments.index(name) + 1]


def run_as_written(arguments: list[str], cwd) -> subprocess.CompletedProcess:
    assert arguments[0] == "tag2text"
    # The console script of the environment running the tests (the one `make test` installs).
    executable = Path(sys.executable).with_name("tag2text")
    assert executable.is_file(), f"{executable}: the package is not installed in this environment"
    command = [str(executable), *arguments[1:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd, env=OFFLINE)


def save_tiny_model(directory, model, processor):
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def test_readme_caption_command(tmp_path, model, processor):
    arguments = readme_command("tag2text caption --model ")
    assert "--tokenizer" not in arguments
    save_tiny_model(tmp_path / option(arguments, "--model"), model, processor)
    inputs = [a for a in arguments[2:] if not a.startswith("-") and a not in (option(arguments, "--model"),
                                                                                 option(arguments, "--output"))]
    (image_dir,) = inputs
    (tmp_path / image_dir / "nested").mkdir(parents=True)
    for index, name in enumerate(["0.png", "1.jpg", "nested/2.png"]):
        tiny_factory.draw_image(index).save(tmp_path / image_dir / name)
    result = run_as_written(arguments, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / option(arguments, "--output")).read_text().splitlines()]
    assert [Path(r["image"]).name for r in rows] == ["0.png", "1.jpg", "2.png"]
    pixel_values = processor(images=[tiny_factory.draw_image(i) for i in range(3)])["pixel_values"]
    assert [r["caption"] for r in rows] == processor.decode_captions(model.generate(pixel_values))
    assert [r["tags"] for r in rows] == [t.tags for t in model.tag(pixel_values)]
    assert "captioned 3, failed 0 of 3 images" in result.stderr.strip().splitlines()[-1]


def test_readme_evaluate_command(tmp_path, model, processor):
    arguments = readme_command("tag2text evaluate ")
    assert "--tokenizer" not in arguments
    save_tiny_model(tmp_path / option(arguments, "--model"), model, processor)
    data = tmp_path / option(arguments, "--data-dir")
    data.mkdir(parents=True)
    rows = []
    for index in range(4):
        tiny_factory.draw_image(index).save(data / f"{index}.png")
        rows.append({"file_name": f"{index}.png", "caption": "a red cat on the grass", "tags": ["cat", "red"]})
    (data / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_as_written(arguments, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / option(arguments, "--output")).read_text())["metrics"]
    assert metrics["num_images"] == 4
    # The tiny model fires cat, grass, red and two on every image (tiny_factory's biases); the labels are cat
    # and red: every label found, 2 of 4 fired tags right.
    assert metrics["tag_OR"] == 100.0 and metrics["tag_OP"] == 50.0
    assert metrics["retrieval_num_images"] == 4 and "caption_CIDEr" in metrics


def test_readme_convert_command_offline_names_the_tokenizer_fix(tmp_path):
    """As written, the conversion takes bert-base-uncased from the Hub; offline that is the first (and only)
    error, naming the model and how to pass a vocab.txt, once the checkpoint's keys have told the family (a
    Tag2Text checkpoint needs a tokenizer, RAM++ none). The checkpoint is the tiny original-layout fixture,
    saved as the released file is: ``{"model": state_dict}``."""
    import torch
    from safetensors.torch import load_file

    arguments = readme_command("tag2text convert ")
    assert "--tokenizer" not in arguments
    state_dict = load_file(Path(__file__).parent / "fixtures" / "original_tiny" / "original_state_dict.safetensors")
    torch.save({"model": state_dict}, tmp_path / option(arguments, "--checkpoint"))
    (tmp_path / option(arguments, "--tag-list")).write_text("dog\ncat\n")
    result = run_as_written(arguments, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("tag2text convert: error: --tokenizer: could not load 'bert-base-uncased'")
    assert "vocab.txt" in line
    assert not (tmp_path / option(arguments, "--output-dir")).exists()


@pytest.mark.parametrize("prefix", ["tag2text mine-tags ", "tag2text build-tag-list ", "tag2text score-captions "])
def test_readme_commands_parse(prefix):
    """The README's other commands name only options that exist (their runs are tested elsewhere)."""
    from tag2text.hub.cli import build_parser

    arguments = readme_command(prefix)
    parser = build_parser(arguments[1])
    args = parser.parse_args(arguments[1:])
    assert args.command == arguments[1]
