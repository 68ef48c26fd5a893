import json
import subprocess
import sys

import tiny_factory
from tag2text.hub.cli import main


def _model_dir(tmp_path, model, processor):
    directory = tmp_path / "model"
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def test_caption_directory_with_a_bad_image(tmp_path, model, processor):
    model_dir = _model_dir(tmp_path, model, processor)
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    for index, name in enumerate(["a.png", "nested/b.jpg", "c.bmp"]):
        tiny_factory.draw_image(index).save(images / name)
    (images / "broken.png").write_bytes(b"not an image")
    output = tmp_path / "out.jsonl"
    status = main(["caption", "--model", str(model_dir), str(images), str(tmp_path / "missing.png"),
                   "--batch-size", "2", "--num-beams", "1", "--max-length", "9", "--output", str(output)])
    assert status == 1
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(lines) == 5
    by_name = {line["image"].rsplit("/", 1)[-1]: line for line in lines}
    assert "not a readable image" in by_name["broken.png"]["error"]
    assert "no such file" in by_name["missing.png"]["error"]
    good = by_name["a.png"]
    assert good["tags"] == ["cat", "grass", "red"]
    assert set(good["tag_scores"]) == {"cat", "grass", "red"} and all(v > 0.68 for v in good["tag_scores"].values())
    pixel_values = processor(images=tiny_factory.draw_image(0))["pixel_values"]
    expected = processor.decode_captions(model.generate(pixel_values, num_beams=1, max_length=9, min_length=9))[0]
    assert good["caption"] == expected


def test_console_script_steers_with_tags_and_succeeds(tmp_path, model, processor):
    model_dir = _model_dir(tmp_path, model, processor)
    image = tmp_path / "x.png"
    tiny_factory.draw_image(5).save(image)
    script = [sys.executable, "-m", "tag2text.hub.cli"]
    result = subprocess.run(script + ["caption", "--model", str(model_dir), str(image), "--tags", "dog | sky",
                                      "--num-beams", "2", "--threshold", "0.5"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["tags"] == ["dog", "sky"] and isinstance(line["caption"], str)
    assert set(line["tag_scores"]) == {"cat", "grass", "red"}


def test_help_lists_subcommands(capsys):
    assert main([]) == 2
    assert "caption" in capsys.readouterr().out
