"""Fine-tuning RAM and RAM++ with ``tag2text train --init-from RAM_DIR`` on the tiny fixtures converted with
``tag2text convert``:

- the label space of a custom tag list: kept tags keep their label-embedding rows (compared with the converted
  weights read from the safetensors file), thresholds and Chinese names; new tags start from the mean of the
  label embeddings, or from CLIP text when a CLIP tower is given (as ``open-set --add`` embeds them);
- a run on synthetic images with given tags and a new tag: the asymmetric tagging loss (computed here in numpy
  from the logits, as the original's formula) falls on images the run never saw, thresholds are calibrated on the
  held-out images, and the directory tags through ``tag2text caption`` and ``AutoModelForImageClassification``;
- resuming from a checkpoint gives the uninterrupted run's weights;
- options without meaning for RAM are refused in one line (exit 2).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.numpy import load_file
from transformers import AutoModelForImageClassification, AutoTokenizer, CLIPTextConfig, CLIPTextModelWithProjection

from ram_support import FIXTURE, convert
from tag2text import Tag2TextImageProcessor, build_ram_open_set
from tag2text.hub.cli import main as cli_main
from tag2text.processing.clip_text import load_clip_text_tower
from tag2text.training.ram_setup import NEW_TAG_THRESHOLD, replace_ram_label_space

CLIP = FIXTURE / "clip_text"
FAMILIES = ["ram", "ram_plus"]
# Four tags of the fixture's list and one it does not have.
TAGS = ["sky", "grass", "red", "sun", "blue square"]


def write_scenes(directory: Path, count: int, seed: int) -> list[dict]:
    """Images whose tags are visible: sky or grass background, a red box, a yellow sun, a blue square."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        sky, red, sun, blue = (bool(rng.random() < 0.5) for _ in range(4))
        image = Image.new("RGB", (96, 96), (135, 206, 235) if sky else (40, 120, 40))
        draw = ImageDraw.Draw(image)
        if red:
            draw.rectangle([10, 50, 40, 90], fill=(220, 20, 20))
        if sun:
            draw.ellipse([60, 5, 90, 35], fill=(250, 220, 0))
        if blue:
            draw.rectangle([50, 60, 90, 90], fill=(20, 20, 220))
        tags = ["sky" if sky else "grass"] + ["red"] * red + ["sun"] * sun + ["blue square"] * blue
        name = f"scene{index:03d}.png"
        image.save(directory / name)
        rows.append({"file_name": name, "caption": "a picture of " + ", ".join(tags), "tags": tags})
    (directory / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ram_training")
    models = {}
    for family in FAMILIES:
        models[family] = root / family
        convert(family, models[family])
    train_rows = write_scenes(root / "train", 48, seed=0)
    test_rows = write_scenes(root / "test", 32, seed=5)
    tag_file = root / "tags.txt"
    tag_file.write_text("\n".join(TAGS) + "\n")
    return {"root": root, "models": models, "train": root / "train", "test": root / "test", "tag_file": tag_file,
            "train_rows": train_rows, "test_rows": test_rows}


def label_rows(family):
    """The converted label embeddings, per tag, from the fixture file (not through the model)."""
    state = load_file(str(FIXTURE / f"{family}_state_dict.safetensors"))
    embed = state["label_embed"]
    names = (FIXTURE / "tag_list.txt").read_text(encoding="utf-8").splitlines()
    per_tag = embed.shape[0] // len(names)
    return {name: embed[i * per_tag:(i + 1) * per_tag] for i, name in enumerate(names)}, embed


def thresholds_of(family):
    names = (FIXTURE / "tag_list.txt").read_text(encoding="utf-8").splitlines()
    values = [float(line) for line in
              (FIXTURE / f"{family}_tag_list_threshold.txt").read_text().split()]
    return dict(zip(names, values))


@pytest.mark.parametrize("family", FAMILIES)
def test_custom_tag_list_keeps_known_tags_and_starts_new_ones_from_the_mean(setup, family):
    model = AutoModelForImageClassification.from_pretrained(setup["models"][family])
    chinese = dict(zip(model.config.tag_names, model.config.tag_names_chinese))
    result = replace_ram_label_space(model, TAGS)
    assert result == {"kept": TAGS[:4], "new": ["blue square"]}
    assert model.config.tag_names == TAGS and model.config.num_tags == 5
    rows, embed = label_rows(family)
    blocks = torch.split(model.label_embed.detach(),
                         model.config.description_counts() if family == "ram_plus" else [1] * 5)
    for name, block in zip(TAGS[:4], blocks):
        np.testing.assert_array_equal(block.numpy(), rows[name])
    np.testing.assert_allclose(blocks[4].numpy(), embed.mean(axis=0, keepdims=True), rtol=1e-5, atol=1e-6)
    expected = thresholds_of(family)
    assert model.config.threshold_list() == pytest.approx([expected[n] for n in TAGS[:4]] + [NEW_TAG_THRESHOLD])
    assert model.config.tag_names_chinese == [chinese[n] for n in TAGS[:4]] + ["blue square"]
    with torch.no_grad():  # the model runs on its new label space
        logits = model(pixel_values=torch.zeros(1, 3, 224, 224)).logits
    assert logits.shape == (1, 5)


@pytest.mark.parametrize("family", FAMILIES)
def test_new_tags_start_from_clip_text_with_a_clip_tower(setup, family):
    clip_model, clip_tokenizer = load_clip_text_tower(str(CLIP))
    model = AutoModelForImageClassification.from_pretrained(setup["models"][family])
    replace_ram_label_space(model, TAGS, clip_model, clip_tokenizer)
    # The open-set path (its embeddings are checked against the original code in test_ram_parity) on the same tag.
    reference = AutoModelForImageClassification.from_pretrained(setup["models"][family])
    build_ram_open_set(reference, ["blue square"], clip_model, clip_tokenizer, add=True)
    torch.testing.assert_close(model.label_embed[-1:].detach(), reference.label_embed[-1:].detach())
    rows, _ = label_rows(family)
    start = model.config.description_counts()[0] * 3 if family == "ram_plus" else 3
    np.testing.assert_array_equal(model.label_embed[start:start + len(rows["sun"])].detach().numpy(), rows["sun"])


def asymmetric_loss_numpy(logits, targets, gamma_neg=7.0, clip=0.05, eps=1e-8):
    """The original's AsymmetricLoss (gamma+ 0), summed, written from its formula."""
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    p_neg = np.minimum(1.0 - p + clip, 1.0)
    positive = targets * np.log(np.maximum(p, eps))
    negative = (1 - targets) * np.log(np.maximum(p_neg, eps)) * (1 - p_neg) ** gamma_neg
    return float(-(positive + negative).sum())


def mean_loss(directory, rows, image_dir, tags):
    model = AutoModelForImageClassification.from_pretrained(directory).eval()
    if model.config.tag_names != tags:
        replace_ram_label_space(model, tags)
    processor = Tag2TextImageProcessor.from_pretrained(directory)
    pixels = processor(images=[Image.open(image_dir / row["file_name"]).convert("RGB") for row in rows],
                       return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits.numpy()
    targets = np.array([[tag in row["tags"] for tag in tags] for row in rows], dtype=np.float64)
    return asymmetric_loss_numpy(logits, targets) / len(rows)


def train(model_dir, setup, out, *extra):
    return cli_main(["--log-level", "WARNING", "train", "--init-from", str(model_dir), "--train-dir",
                     str(setup["train"]), "--output-dir", str(out), "--tag-list", str(setup["tag_file"]),
                     "--per-device-train-batch-size", "8", "--learning-rate", "1e-3", "--no-augment",
                     "--holdout-min", "8", "--disable-tqdm", "true", "--report-to", "none", *extra])


@pytest.mark.parametrize("family", FAMILIES)
def test_train_learns_the_tags_calibrates_and_saves_a_model_every_command_reads(setup, family, tmp_path):
    out = tmp_path / "tuned"
    extra = ["--clip-model", str(CLIP)] if family == "ram_plus" else []
    assert train(setup["models"][family], setup, out, "--max-steps", "30", *extra) == 0
    before = mean_loss(setup["models"][family], setup["test_rows"], setup["test"], TAGS)
    after = mean_loss(out, setup["test_rows"], setup["test"], TAGS)
    assert after < 0.6 * before, (before, after)  # measured: 4.1 -> 1.3 per image (RAM)

    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 30 and summary["loss_weights"] == {"tag": 1.0}
    calibration = summary["threshold_calibration"]
    assert calibration["split"].startswith("held-out 8 of 48")
    config = json.loads((out / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(5)] == TAGS
    assert config["model_type"] == family
    # Every tag has a positive among the 8 held-out images here, so every threshold was searched there.
    assert sorted(calibration["thresholds"]) == sorted(TAGS)
    assert config["class_thresholds"] == pytest.approx([calibration["thresholds"][t] for t in TAGS], abs=1e-4)
    assert (out / "tag_list.txt").read_text().split("\n")[:5] == TAGS
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert "auto_map" not in preprocessor  # the directory's processor is found through config.json

    # The saved directory tags through the CLI with its calibrated thresholds, as model.tag does.
    rows_file = tmp_path / "rows.jsonl"
    images = [setup["test"] / row["file_name"] for row in setup["test_rows"][:3]]
    assert cli_main(["--log-level", "WARNING", "caption", "--model", str(out), *map(str, images),
                     "--output", str(rows_file)]) == 0
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    processor = Tag2TextImageProcessor.from_pretrained(out)
    expected = model.tag(processor(images=[Image.open(p).convert("RGB") for p in images],
                                   return_tensors="pt")["pixel_values"])
    assert [row["tags"] for row in rows] == [result.tags for result in expected]
    assert [row["tags_zh"] for row in rows] == [result.tags_zh for result in expected]

    # tag2text evaluate: tagging metrics; mAP against average precision computed here from the model's scores.
    metrics_file = tmp_path / "metrics.json"
    assert cli_main(["--log-level", "WARNING", "evaluate", "--model", str(out), "--data-dir", str(setup["test"]),
                     "--output", str(metrics_file)]) == 0
    metrics = json.loads(metrics_file.read_text())["metrics"]
    pixels = processor(images=[Image.open(setup["test"] / row["file_name"]).convert("RGB")
                               for row in setup["test_rows"]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():  # probabilities, as evaluate scores them (float32 sigmoid: its ties included)
        scores = torch.sigmoid(model(pixel_values=pixels).logits.float()).numpy()
    truth = np.array([[tag in row["tags"] for tag in TAGS] for row in setup["test_rows"]], dtype=np.float64)
    assert metrics["num_images"] == 32 and "caption_CIDEr" not in metrics
    assert metrics["tag_mAP"] == pytest.approx(100 * np.mean([average_precision(scores[:, i], truth[:, i])
                                                              for i in range(len(TAGS))]), abs=1e-6)

    from tag2text.hub.model_card import card_for_directory

    card = card_for_directory(out)
    assert "image tagging (5 tags)" in card and "Fine-tuned with `tag2text train --init-from`" in card


def average_precision(scores, labels):
    """Mean over the positives of the precision among the images scored at least as high (tied images count as
    ranked above: the pessimistic reading of ties, which identical synthetic images make common)."""
    precisions = [labels[scores >= scores[i]].mean() for i in np.flatnonzero(labels)]
    return float(np.mean(precisions))


def test_evaluate_refuses_caption_tasks_for_ram(setup, tmp_path, capsys):
    assert cli_main(["evaluate", "--model", str(setup["models"]["ram"]), "--data-dir", str(setup["test"]),
                     "--output", str(tmp_path / "m.json"), "--tasks", "tagging,captioning"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--tasks" in error[0] and "RAM model" in error[0]
    assert not (tmp_path / "m.json").exists()


def test_resume_from_a_checkpoint_gives_the_uninterrupted_weights(setup, tmp_path):
    whole = tmp_path / "whole"
    assert train(setup["models"]["ram_plus"], setup, whole, "--max-steps", "6", "--save-steps", "3",
                 "--holdout-fraction", "0") == 0
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-3", resumed / "checkpoint-3")
    shutil.copy(whole / "tag_list.txt", resumed / "tag_list.txt")
    assert train(setup["models"]["ram_plus"], setup, resumed, "--max-steps", "6", "--save-steps", "3",
                 "--holdout-fraction", "0", "--resume-from-checkpoint", str(resumed / "checkpoint-3")) == 0
    a = load_file(str(whole / "model.safetensors"))
    b = load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
    assert worst <= 1e-6, worst
    first = load_file(str(setup["models"]["ram_plus"] / "model.safetensors"))
    assert not np.array_equal(first["fc.weight"], a["fc.weight"])  # the run did train


@pytest.mark.parametrize("option, value", [("--tokenizer", "bert-base-uncased"), ("--loss-weights", "tag=1"),
                                           ("--image-size", "384")])
def test_options_without_meaning_for_ram_are_refused_in_one_line(setup, tmp_path, capsys, option, value):
    out = tmp_path / "out"
    assert train(setup["models"]["ram"], setup, out, "--max-steps", "1", option, value) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and option in error[0] and "RAM" in error[0], error
    assert not (out / "model.safetensors").exists()


def test_a_repeated_tag_or_a_clip_of_another_width_is_one_line(setup, tmp_path, capsys):
    repeated = tmp_path / "repeated.txt"
    repeated.write_text("sky\nred\nsky\n")
    out = tmp_path / "out"
    assert cli_main(["train", "--init-from", str(setup["models"]["ram"]), "--train-dir", str(setup["train"]),
                     "--output-dir", str(out), "--tag-list", str(repeated), "--max-steps", "1"]) == 2
    error = errors(capsys)
    assert len(error) == 1 and "repeated.txt" in error[0] and "'sky'" in error[0], error
    narrow = tmp_path / "clip16"
    config = CLIPTextConfig.from_pretrained(CLIP)
    config.projection_dim = 16
    CLIPTextModelWithProjection(config).save_pretrained(narrow)
    AutoTokenizer.from_pretrained(CLIP).save_pretrained(narrow)
    assert train(setup["models"]["ram"], setup, out, "--max-steps", "1", "--clip-model", str(narrow)) == 2
    error = errors(capsys)
    assert len(error) == 1 and "--clip-model" in error[0] and "16" in error[0] and "512" in error[0], error
    assert not out.exists()


def errors(capsys):
    """The error lines of stderr (loading progress bars come before them); no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    return [line for line in err.splitlines() if "error:" in line]


def test_clip_model_errors_name_the_option(setup, tmp_path, capsys):
    assert train(setup["models"]["ram"], setup, tmp_path / "a", "--clip-model", str(tmp_path / "nowhere")) == 2
    assert "--clip-model" in capsys.readouterr().err
    tag2text_dir = setup["root"] / "not_ram"
    assert cli_main(["--log-level", "WARNING", "train", "--train-dir", str(setup["train"]), "--output-dir",
                     str(tmp_path / "b"), "--clip-model", str(CLIP), "--model-config", "tiny"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--clip-model" in error[0] and "RAM" in error[0]
    assert not tag2text_dir.exists()


def test_tags_are_mined_from_captions_into_the_models_tag_list(setup, tmp_path):
    data = tmp_path / "captions_only"
    data.mkdir()
    captions = ["a red car under the sun in the sky", "a dog on the grass by a house"]
    for index, caption in enumerate(captions):
        shutil.copy(setup["train"] / setup["train_rows"][index]["file_name"], data / f"{index}.png")
    (data / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"{i}.png", "caption": c}) + "\n"
                                                 for i, c in enumerate(captions)))
    out = tmp_path / "out"
    assert cli_main(["--log-level", "WARNING", "train", "--init-from", str(setup["models"]["ram"]), "--train-dir",
                     str(data), "--output-dir", str(out), "--max-steps", "1", "--per-device-train-batch-size", "2",
                     "--disable-tqdm", "true", "--report-to", "none"]) == 0
    names = (FIXTURE / "tag_list.txt").read_text(encoding="utf-8").splitlines()
    assert (out / "tag_list.txt").read_text(encoding="utf-8").splitlines() == names  # the model's own list
    mined = json.loads(next((data / ".tag2text-cache").glob("ids-*.json")).read_text())
    assert [sorted(names[i] for i in set(ids)) for ids in mined] == [
        ["car", "red", "sky", "sun"], ["dog", "grass", "house"]]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["num_tags"] == len(names) and summary["global_step"] == 1


def test_torchrun_two_processes_train_one_model(setup, tmp_path):
    import subprocess
    import sys

    from training_support import subprocess_env

    out = tmp_path / "ddp"
    log = tmp_path / "ddp.log"  # a file, not a pipe: a process blocked on a full pipe would stall the collective
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "tag2text.hub.cli", "--log-level", "WARNING", "train", "--init-from", str(setup["models"]["ram"]),
               "--train-dir", str(setup["train"]), "--output-dir", str(out), "--tag-list", str(setup["tag_file"]),
               "--max-steps", "4", "--per-device-train-batch-size", "4", "--holdout-min", "8",
               "--disable-tqdm", "true", "--report-to", "none"]
    with open(log, "w") as handle:
        result = subprocess.run(command, env=subprocess_env(), stdout=handle, stderr=subprocess.STDOUT, timeout=600)
    assert result.returncode == 0, log.read_text()[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["samples_per_process"] == [16, 16]
    assert summary["threshold_calibration"]["num_thresholds"] == len(TAGS)
    model = AutoModelForImageClassification.from_pretrained(out)
    assert model.config.tag_names == TAGS


def test_plain_trainer_with_the_tagging_collator(setup, tmp_path):
    """The README's plain-Trainer recipe: records of image paths and tag ids, TaggingCollator, transformers'
    Trainer with its defaults (the loss comes from the model's forward)."""
    from transformers import AutoImageProcessor, Trainer, TrainingArguments

    from tag2text.training.ram_setup import TaggingCollator

    model = AutoModelForImageClassification.from_pretrained(setup["models"]["ram"])
    processor = AutoImageProcessor.from_pretrained(setup["models"]["ram"])
    ids = model.config.label2id
    records = [{"image": str(setup["train"] / row["file_name"]), "tag_ids": [ids[t] for t in row["tags"] if t in ids]}
               for row in setup["train_rows"]]
    before = model.fc.weight.detach().clone()
    trainer = Trainer(model=model, args=TrainingArguments(str(tmp_path / "run"), remove_unused_columns=False,
                                                          max_steps=3, per_device_train_batch_size=4,
                                                          report_to="none", learning_rate=1e-3),
                      train_dataset=records, data_collator=TaggingCollator(processor, model.config.num_tags))
    result = trainer.train()
    assert result.global_step == 3 and np.isfinite(result.training_loss) and result.training_loss > 0
    assert not torch.equal(before, model.fc.weight.detach())
    batch = TaggingCollator(processor, model.config.num_tags)(records[:2])
    assert sorted(batch) == ["labels", "pixel_values"] and batch["labels"].shape == (2, model.config.num_tags)
    assert [sorted(torch.nonzero(row).flatten().tolist()) for row in batch["labels"]] == \
        [sorted(set(r["tag_ids"])) for r in records[:2]]

