"""The paths a user takes, as the README writes them, run as subprocesses offline and without --tokenizer:
`tag2text train` then `tag2text caption` (tiny size, few steps: behaviours, not quality; the full-size
acceptance run is benchmarks/train_defaults.py), bad option values, `--help` without torch, and the
quickstart's early-stop report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import training_scenes as scenes
import training_support as support


def _tag2text(*argv, timeout=900):
    return subprocess.run([sys.executable, "-m", "tag2text.hub.cli", *map(str, argv)], env=support.subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """`tag2text train --train-dir D --output-dir O --model-config tiny --max-steps 8` on 160 drawn images."""
    root = tmp_path_factory.mktemp("user-path")
    train = scenes.write_scenes(root / "train", 160, seed=21, image_size=32)
    heldout = scenes.write_scenes(root / "heldout", 6, seed=22, image_size=32)
    out = root / "run"
    result = _tag2text("train", "--train-dir", train, "--output-dir", out, "--model-config", "tiny", "--max-steps", 8)
    return {"train": train, "heldout": heldout, "out": out, "result": result, "root": root}


def test_train_from_scratch_builds_its_tokenizer_from_the_captions_and_says_so(user_run):
    result, out = user_run["result"], user_run["out"]
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
    assert "no --tokenizer given: trained a" in log and "WordPiece vocabulary on" in log
    assert "training a new model from scratch: defaults for the options not given: --learning-rate 0.001" in log
    from tag2text import Tag2TextProcessor

    tokenizer = Tag2TextProcessor.from_pretrained(out).tokenizer
    captions = [c for line in (user_run["train"] / "metadata.jsonl").read_text().splitlines()
                for c in json.loads(line)["captions"]]
    for caption in captions[:50]:
        assert tokenizer.unk_token not in tokenizer.tokenize(caption), caption
    config = json.loads((out / "config.json").read_text())
    unk = tokenizer.unk_token_id
    assert unk not in config["prompt_token_ids"] and all(unk not in ids for ids in config["tag_token_ids"])
    assert sorted(config["tag_names"]) == sorted(set(scenes.SHAPES) | set(scenes.COLOURS))  # mined from the captions
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["tokenizer"].startswith("trained on the training captions")
    assert summary["defaults_chosen"]["learning_rate"] == 1e-3 and summary["defaults_chosen"]["augment"] is False
    assert summary["global_step"] == summary["planned_steps"] == 8 and summary["stopped_early"] is False


def test_without_eval_dir_a_seeded_holdout_calibrates_the_thresholds(user_run):
    out = user_run["out"]
    summary = json.loads((out / "train_summary.json").read_text())
    holdout = summary["holdout"]
    assert holdout["images"] == 32 and holdout["of"] == 160  # 5% of 160 is 8: the minimum of 32 applies
    assert len(set(holdout["indices"])) == 32 and all(0 <= i < 160 for i in holdout["indices"])
    assert "holding out 32 of 160 training images" in user_run["result"].stderr
    # every tag drawn in a held-out image got a threshold of its own, saved in the model's config
    lines = (user_run["train"] / "metadata.jsonl").read_text().splitlines()
    held_tags = set().union(*(scenes.truth_tags(json.loads(lines[i])["objects"]) for i in holdout["indices"]))
    config = json.loads((out / "config.json").read_text())
    calibrated = {config["tag_names"][int(k)] for k in config["tag_thresholds"]}
    assert calibrated == held_tags
    report = summary["threshold_calibration"]
    assert report["num_thresholds"] == len(held_tags) and set(report["thresholds"]) == held_tags
    for name, value in report["thresholds"].items():
        assert config["tag_thresholds"][str(config["tag_names"].index(name))] == pytest.approx(value, abs=1e-4)
    # the held-out images were not trained on: 8 steps of 32 images are 2 epochs of the 128 others (1.6 of 160)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(2.0)


def test_the_trained_model_loads_and_captions_held_out_images(user_run):
    out, heldout = user_run["out"], user_run["heldout"]
    captions = user_run["root"] / "captions.jsonl"
    result = _tag2text("caption", "--model", out, heldout, "--output", captions)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in captions.read_text().splitlines()]
    assert sorted(Path(x["image"]).name for x in lines) == sorted(p.name for p in heldout.glob("*.png"))
    names = set(json.loads((out / "config.json").read_text())["tag_names"])
    for line in lines:
        assert isinstance(line["caption"], str) and set(line["tags"]) <= names


def test_a_fine_tune_augments_as_its_start_model_was_trained(user_run, tmp_path):
    """--init-from without --augment/--no-augment: off after a model trained without it (recorded in its
    config), on for weights with nothing recorded (as converted released ones); the flags still win."""
    import shutil

    from tag2text.training.arguments import argument_parser, dataclasses_from_namespace
    from tag2text.training.training_run import prepare_training

    out = user_run["out"]
    assert json.loads((out / "config.json").read_text())["trained_with_augmentation"] is False
    unrecorded = tmp_path / "unrecorded"
    shutil.copytree(out, unrecorded)
    config = json.loads((unrecorded / "config.json").read_text())
    del config["trained_with_augmentation"]
    (unrecorded / "config.json").write_text(json.dumps(config))

    def augments(start, *flags):
        parser = argument_parser()
        target = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        args = parser.parse_args(["--train-dir", str(user_run["train"]), "--output-dir", str(target), "--init-from",
                                  str(start), "--max-steps", "1", *flags])
        setup = prepare_training(*dataclasses_from_namespace(args)[:3])
        return setup.collator.augmentation is not None, setup.model.config.trained_with_augmentation

    assert augments(out) == (False, False)
    assert augments(unrecorded) == (True, True)
    assert augments(out, "--augment") == (True, True)
    assert augments(unrecorded, "--no-augment") == (False, False)

    tuned = tmp_path / "tuned"  # the user's command, and what it records for the next fine-tune
    result = _tag2text("train", "--train-dir", user_run["train"], "--output-dir", tuned, "--init-from", out,
                       "--max-steps", 2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "augmentation off (its config says it was trained without it)" in result.stderr
    assert json.loads((tuned / "config.json").read_text())["trained_with_augmentation"] is False
    assert json.loads((tuned / "train_summary.json").read_text())["defaults_chosen"]["augment"] is False


@pytest.mark.parametrize("argv, named", [
    (["train", "--max-steps", "0"], "--max-steps"),
    (["train", "--per-device-train-batch-size", "-4"], "--per-device-train-batch-size"),
    (["train", "--learning-rate", "fast"], "--learning-rate"),
    (["quickstart", "--max-steps", "0"], "--max-steps"),
    (["quickstart", "--batch-size", "-1"], "--batch-size"),
])
def test_bad_option_values_fail_in_one_line_naming_option_and_value(tmp_path, argv, named):
    full = argv + (["--train-dir", str(tmp_path), "--output-dir", str(tmp_path / "o")] if argv[0] == "train"
                   else ["--output-dir", str(tmp_path / "o")])
    result = _tag2text(*full, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert named in last and argv[2] in last, result.stderr
    assert not (tmp_path / "o").exists()


def test_checks_after_parsing_fail_before_any_model_is_built(tmp_path):
    existing_file = tmp_path / "taken"
    existing_file.write_text("x")
    cases = [
        (["quickstart", "--output-dir", existing_file], f"--output-dir {existing_file}"),
        (["train", "--train-dir", tmp_path / "nowhere", "--output-dir", tmp_path / "o"], "--train-dir"),
        (["train", "--train-dir", tmp_path, "--output-dir", existing_file], "--output-dir"),
        (["train", "--train-dir", tmp_path, "--output-dir", tmp_path / "o", "--init-from", "./no/such/model"],
         "--init-from ./no/such/model"),
        (["train", "--train-dir", tmp_path, "--output-dir", tmp_path / "o", "--model-config", "huge"], "--model-config"),
        (["train", "--train-dir", tmp_path, "--output-dir", tmp_path / "o", "--loss-weights", "tag=x"],
         "--loss-weights"),
    ]
    for argv, named in cases:
        result = _tag2text(*argv, timeout=120)
        assert result.returncode == 2, (argv, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        assert named in lines[-1], (argv, result.stderr[-2000:])
        assert not (tmp_path / "o").exists()


def test_help_of_train_lists_the_options_and_quickstart_help_stays_light():
    """train's options are transformers' HfArgumentParser over TrainingArguments, so its --help imports
    transformers (issue 23); quickstart's --help imports neither torch nor transformers."""
    script = ("import sys\nfrom tag2text.hub.cli import main\n"
              "main([sys.argv[1], '--help'])\n"
              "print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    outputs = {}
    for command in ("train", "quickstart"):
        result = subprocess.run([sys.executable, "-c", script, command], env=support.subprocess_env(),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        outputs[command] = result.stdout
    train = " ".join(outputs["train"].split())
    assert "--max-steps" in train and "--learning-rate" in train and "--model-config" in train
    assert "--bf16" in train and "--no-augment" in train  # every TrainingArguments field, and our own flags
    # the run-dependent defaults, RAM / RAM++ fine-tuning's own learning rate included
    assert "(default: 0.001 from scratch, 5e-05 with --init-from, 5e-06 with --init-from a RAM / RAM++ model)" in train
    assert "--max-steps" in outputs["quickstart"]
    assert outputs["quickstart"].strip().splitlines()[-1] == "HEAVY []"


def test_quickstart_that_stops_early_says_so_on_its_first_line(tmp_path):
    out = tmp_path / "qs"
    result = _tag2text("quickstart", "--output-dir", out, "--train-images", 24, "--val-images", 8, "--test-images", 6,
                       "--max-steps", 400, "--batch-size", 4, "--num-beams", 1, "--time-budget-minutes", 0.001)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    summary = next(i for i, line in enumerate(lines) if line.startswith("Tag2Text quickstart:"))
    first = lines[summary - 1]  # the summary block opens with the early stop, above its usual first line
    report = json.loads((out / "metrics.json").read_text())
    assert report["stopped_early"] is True and report["planned_steps"] == 400 and report["steps"] < 400
    assert first.startswith(f"STOPPED EARLY: trained {report['steps']} of 400 planned steps")
    assert lines[summary].startswith(f"Tag2Text quickstart: {report['steps']} of 400 steps")
    assert "--time-budget-minutes 0.001" in first
