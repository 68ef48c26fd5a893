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


def test_caption_directory_with_a_bad_image(tmp_path, model, processor, capsys):
    model_dir = _model_dir(tmp_path, model, processor)
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    for index, name in enumerate(["a.png", "nested/b.jpg", "c.bmp"]):
        tiny_factory.draw_image(index).save(images / name)
    (images / "broken.png").write_bytes(b"not an image")
    output = tmp_path / "out.jsonl"
    status = main(["caption", "--model", str(model_dir), str(images),
                   "--batch-size", "2", "--num-beams", "1", "--max-length", "9", "--output", str(output)])
    assert status == 1
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(lines) == 4
    by_name = {line["image"].rsplit("/", 1)[-1]: line for line in lines}
    assert "not a readable image" in by_name["broken.png"]["error"]
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert summary.startswith("tag2text caption: captioned 3, failed 1 of 4 images") and "s per image" in summary
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
    assert "warning" not in result.stderr
    assert "captioned 1, failed 0 of 1 images" in result.stderr.strip().splitlines()[-1]


def test_steering_tags_the_tokenizer_cannot_spell_are_named_once(tmp_path, model, processor):
    model_dir = _model_dir(tmp_path, model, processor)
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        tiny_factory.draw_image(index).save(images / f"{index}.png")
    script = [sys.executable, "-m", "tag2text.hub.cli"]
    result = subprocess.run(script + ["caption", "--model", str(model_dir), str(images), "--tags", "dog | zebra | qq",
                                      "--num-beams", "1", "--batch-size", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "'zebra' (not in the tag list)" in warnings[0] and "'qq' (not in the tag list)" in warnings[0]
    assert "'dog'" not in warnings[0]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 3 and all(row["tags"] == ["dog", "zebra", "qq"] for row in rows)


def test_caption_runs_the_vision_tower_once_per_image(model, processor):
    from tag2text.hub.inference import caption_batch

    images = [tiny_factory.draw_image(seed) for seed in range(3)]
    calls = []

    def count(module, args, kwargs):
        calls.append(kwargs["pixel_values"].shape[0] if "pixel_values" in kwargs else args[0].shape[0])

    handle = model.vision_model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        predicted = caption_batch(model, processor, images, generate_kwargs={"num_beams": 2, "max_new_tokens": 5})
        assert sum(calls) == 3
        calls.clear()
        steered = caption_batch(model, processor, images, tags="dog | sky", generate_kwargs={"num_beams": 1})
        assert sum(calls) == 3
    finally:
        handle.remove()
    # Same results as the model's own two-pass path (tag, then generate from pixels).
    pixel_values = processor(images=images)["pixel_values"]
    tagged = model.tag(pixel_values)
    expected = processor.decode_captions(model.generate(pixel_values, num_beams=2, max_new_tokens=5))
    assert [r["caption"] for r in predicted] == expected
    assert [r["tags"] for r in predicted] == [t.tags for t in tagged]
    assert [list(r["tag_scores"].values()) for r in predicted] == [[round(s, 6) for s in t.scores] for t in tagged]
    steered_expected = processor.decode_captions(
        model.generate(pixel_values, tags=["dog | sky"] * 3, tokenizer=processor.tokenizer, num_beams=1))
    assert [r["caption"] for r in steered] == steered_expected
    assert all(r["tags"] == ["dog", "sky"] for r in steered)


def test_help_lists_subcommands(capsys):
    assert main([]) == 2
    assert "caption" in capsys.readouterr().out
