"""Training defaults: the `small` preset, the tokenizer trained on captions, run-dependent training defaults,
and the train options, made by transformers' HfArgumentParser."""

import argparse
import dataclasses

import pytest

from tag2text.training.arguments import TrainingArgumentError


def _parse(*argv):
    from tag2text.training.arguments import argument_parser

    return argument_parser().parse_args(list(argv))


def test_small_preset_is_the_quickstart_architecture_and_loads_by_name():
    from tag2text import Tag2TextConfig, Tag2TextForCaptioning, preset_config
    from tag2text.training.quickstart import QUICKSTART_ARCHITECTURE

    config = preset_config("small", vocab_size=200, tag_names=["a", "b", "c"])
    by_name = Tag2TextConfig.from_pretrained("small")
    assert by_name.to_dict()["vision_config"] == preset_config("small").to_dict()["vision_config"]
    for section in ("vision_config", "text_config", "tagging_config"):
        for key, value in QUICKSTART_ARCHITECTURE[section].items():
            if key != "model_type":
                assert getattr(getattr(config, section), key) == value, (section, key)
    for key in ("image_text_hidden_size", "max_tag_length", "tag_threshold"):
        assert getattr(config, key) == QUICKSTART_ARCHITECTURE[key]
    assert config.num_tags == 3 and config.text_config.vocab_size == 200
    model = Tag2TextForCaptioning(config)
    parameters = sum(p.numel() for p in model.parameters())
    assert 300_000 < parameters < 3_000_000  # CPU-sized, but far above the 32-wide "tiny"


def test_wordpiece_from_captions_spells_unseen_words_in_pieces_and_keeps_required_words_whole(tmp_path):
    from tag2text import build_tokenizer
    from tag2text.training.model_setup import train_caption_wordpiece, write_caption_vocabulary

    captions = ["a pink block beside a navy arrow", "a gold crescent below a teal frame", "just a brown hourglass",
                "a violet block and a pink frame"] * 5
    required = ["a picture of ", "|", "hourglass"]
    tokenizer = build_tokenizer(train_caption_wordpiece(captions, tmp_path / "wp" / "vocab.txt", required=required))
    assert len(tokenizer) > 10 + 2  # more than the special tokens (+ [DEC], [ENC])
    for word in ("pink", "block", "crescent", "hourglass", "picture", "of", "|"):
        assert tokenizer.tokenize(word) == [word]
    # a word never seen in the captions: pieces, not [UNK] (every letter of it was seen)
    pieces = tokenizer.tokenize("a pinkish arrowhead")
    assert "[UNK]" not in pieces and "".join(p.removeprefix("##") for p in pieces) == "apinkisharrowhead"
    whole = build_tokenizer(write_caption_vocabulary(captions, tmp_path / "ww" / "vocab.txt"))
    assert whole.tokenize("a pinkish arrowhead") == ["a", "[UNK]", "[UNK]"]


def test_defaults_depend_on_the_start_and_explicit_values_win(tmp_path):
    from tag2text.training.arguments import dataclasses_from_namespace

    base = ["--train-dir", str(tmp_path), "--output-dir", str(tmp_path / "o")]
    model, data, training, chosen = dataclasses_from_namespace(_parse(*base))
    assert model.model_config == "small" and model.tokenizer is None and model.scratch_init
    assert training.learning_rate == 1e-3 and training.lr_scheduler_type.value == "cosine"
    assert training.warmup_steps == 0.05 and training.per_device_train_batch_size == 32
    assert training.loss_weights == "tag=2,lm=1,itc=0.5,itm=0.5" and training.tag_loss_scale == "batch"
    assert chosen["learning_rate"] == 1e-3
    import torch

    # without an accelerator, pinned memory is off by default (torch would warn and ignore it); asked for, it stays
    assert training.dataloader_pin_memory is torch.accelerator.is_available()
    _, _, pinned, chosen_pinned = dataclasses_from_namespace(_parse(*base, "--dataloader-pin-memory", "true"))
    assert pinned.dataloader_pin_memory is True and "dataloader_pin_memory" not in chosen_pinned

    _, _, tuned, chosen = dataclasses_from_namespace(_parse(*base, "--init-from", str(tmp_path)))
    assert tuned.learning_rate == 5e-5 and tuned.loss_weights == "tag=1,lm=1,itc=1,itm=1"
    assert tuned.tag_loss_scale == "lm" and tuned.per_device_train_batch_size == 8  # transformers' default

    _, _, explicit, chosen = dataclasses_from_namespace(
        _parse(*base, "--learning-rate", "3e-4", "--lr-scheduler-type", "linear", "--per-device-train-batch-size", "4"))
    assert explicit.learning_rate == 3e-4 and explicit.lr_scheduler_type.value == "linear"
    assert explicit.per_device_train_batch_size == 4
    assert "learning_rate" not in chosen and "lr_scheduler_type" not in chosen
    # untouched TrainingArguments fields keep transformers' own defaults
    from transformers import TrainingArguments

    reference = TrainingArguments(output_dir=str(tmp_path / "o"))
    assert explicit.adam_beta2 == reference.adam_beta2 and explicit.save_steps == reference.save_steps


def test_bad_values_are_one_line_naming_the_option_and_the_value(tmp_path, capsys):
    """Through the command line: a value argparse cannot convert, or one out of range (checked by the argument
    dataclasses), is one line on stderr with the option and the value, exit status 2, before any data is read."""
    from tag2text.hub.cli import main

    base = ["train", "--train-dir", str(tmp_path), "--output-dir", str(tmp_path / "o")]
    for option, value in (("--max-steps", "0"), ("--per-device-train-batch-size", "-4"), ("--learning-rate", "abc"),
                          ("--tag-threshold", "1.5"), ("--holdout-fraction", "0.7"), ("--max-steps", "-3"),
                          ("--lr-scheduler-type", "sideways"), ("--augment", "maybe"), ("--learning-rate", "nan"),
                          ("--num-tags", "0"), ("--crop-min-scale", "0")):
        assert main([*base, option, value]) == 2, (option, value)
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tag2text train: error: "), lines
        assert option in lines[0] and value in lines[0], lines[0]
    assert _parse("--max-steps", "-1").max_steps == -1  # transformers' "use the epochs"


def test_training_arguments_that_transformers_rejects_become_usage_errors(tmp_path):
    from tag2text.training.arguments import dataclasses_from_namespace

    args = _parse("--train-dir", str(tmp_path), "--output-dir", str(tmp_path / "o"), "--load-best-model-at-end",
                  "--eval-strategy", "steps", "--save-strategy", "epoch")
    with pytest.raises(TrainingArgumentError, match="training options"):
        dataclasses_from_namespace(args)


def test_options_are_hf_argument_parsers_and_only_given_training_options_are_set(tmp_path):
    """Every option HfArgumentParser makes of the three dataclasses is there; training options not given stay
    out of the namespace (so that run_defaults can choose them), flags take no value, and help states defaults."""
    from transformers import HfArgumentParser

    from tag2text.training.arguments import DataArguments, ModelArguments, Tag2TextTrainingArguments, argument_parser

    ours = argument_parser()
    theirs = HfArgumentParser((ModelArguments, DataArguments, Tag2TextTrainingArguments))
    our_options = {o for action in ours._actions for o in action.option_strings}
    their_options = {o for action in theirs._actions for o in action.option_strings}
    assert their_options <= our_options and {"--no-augment", "--no_augment"} <= our_options - their_options
    training_names = {f.name for f in dataclasses.fields(Tag2TextTrainingArguments)}
    parsed = vars(ours.parse_args(["--train-dir", "d", "--augment", "--seed", "3", "--no-shuffle-tags"]))
    assert {name for name in parsed if name in training_names} == {"seed"} and parsed["seed"] == 3
    assert parsed["augment"] is True and parsed["shuffle_tags"] is False and parsed["holdout_min"] == 32
    assert vars(ours.parse_args(["--no-augment"]))["augment"] is False
    assert "augment" in vars(ours.parse_args([])) and vars(ours.parse_args([]))["augment"] is None
    text = " ".join(ours.format_help().split())
    assert ("(default: 0.001 from scratch, 5e-05 with --init-from, 5e-06 with --init-from a RAM / RAM++ model)"
            in text)
    assert "(default: linear)" not in text and "cosine from scratch, cosine with --init-from" in text


def test_quickstart_runs_a_fixed_number_of_steps_unless_given_a_time_budget():
    from tag2text.hub.quickstart_command import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert args.max_steps == 2000 and args.time_budget_minutes is None
    assert parser.parse_args(["--time-budget-minutes", "7.5"]).time_budget_minutes == 7.5
    with pytest.raises(SystemExit):
        parser.parse_args(["--time-budget-minutes", "0"])
