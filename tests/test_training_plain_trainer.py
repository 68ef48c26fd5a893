"""The models under transformers' own Trainer with its defaults: evaluation losses with the default label names,
gradient accumulation normalised by num_items_in_batch, the renamed tag targets, and the collator's batches
going straight into forward while it counts skipped images (also in DataLoader worker processes)."""

import warnings

import pytest
import torch
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.utils.generic import find_labels

import training_support as support
from tag2text import Tag2TextForCaptioning
from tag2text.modeling_tag2text_pretraining import Tag2TextForPreTraining
from tag2text.training.collator import Tag2TextCollator
from tiny_factory import draw_image

# Captions of different lengths: micro-batches then hold different numbers of target tokens, which is what
# normalising by num_items_in_batch (instead of averaging micro-batch means) is about.
CAPTIONS = ["a red square", "a large blue circle on the white grass", "two green trees", "a cat"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("plain-trainer")
    tokenizer = support.caption_tokenizer(root, CAPTIONS + ["red blue green square circle"])
    names = ["red", "blue", "green", "square", "circle"]
    model = support.tiny_model(tokenizer, names)
    from tag2text import Tag2TextImageProcessor, Tag2TextProcessor

    processor = Tag2TextProcessor(image_processor=Tag2TextImageProcessor(size=32), tokenizer=tokenizer)
    rows = [{"image": draw_image(i), "caption": caption} for i, caption in enumerate(CAPTIONS)]
    return model, processor, rows


def _without_dropout(model):
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if hasattr(module, "drop_prob"):
            module.drop_prob = 0.0
    return model


def _collate(processor):
    def collate(examples):
        return processor(images=[e["image"] for e in examples], text=[e["caption"] for e in examples],
                         return_labels=True)
    return collate


def _args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "out"), remove_unused_columns=False, report_to="none", use_cpu=True,
                  dataloader_pin_memory=False, save_strategy="no", disable_tqdm=True)
    values.update(overrides)
    return TrainingArguments(**values)


def test_default_label_names_are_the_caption_labels_only():
    assert find_labels(Tag2TextForCaptioning) == ["labels"]
    assert find_labels(Tag2TextForPreTraining) == ["labels"]
    assert Tag2TextForCaptioning.accepts_loss_kwargs is True and Tag2TextForPreTraining.accepts_loss_kwargs is False


def test_evaluate_reports_the_loss_of_caption_only_batches(parts, tmp_path):
    model, processor, rows = parts
    model = _without_dropout(model).eval()
    collate = _collate(processor)
    trainer = Trainer(model=model, args=_args(tmp_path, per_device_eval_batch_size=4), eval_dataset=rows,
                      data_collator=collate)
    assert trainer.label_names == ["labels"]
    metrics = trainer.evaluate()
    with torch.no_grad():
        expected = model(**collate(rows)).loss.item()  # one batch of all four: the same mean token loss
    assert metrics["eval_loss"] == pytest.approx(expected, rel=1e-5)


def _one_step(model, rows, processor, tmp_path, batch_size, accumulation):
    model = _without_dropout(model)
    trainer = Trainer(model=model, train_dataset=rows, data_collator=_collate(processor),
                      args=_args(tmp_path / f"b{batch_size}", per_device_train_batch_size=batch_size,
                                 gradient_accumulation_steps=accumulation, max_steps=1, optim="sgd",
                                 learning_rate=0.5, weight_decay=0.0, max_grad_norm=0.0, lr_scheduler_type="constant",
                                 warmup_steps=0))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer.train()
    return {name: before[name] - p.detach() for name, p in model.named_parameters()}


def test_gradient_accumulation_gives_the_whole_batch_step(parts, tmp_path):
    model, processor, rows = parts
    state = {k: v.clone() for k, v in model.state_dict().items()}

    # Independent: the gradient of the whole batch's mean token loss, by hand.
    reference = _without_dropout(support.tiny_model(processor.tokenizer, model.config.tag_names))
    reference.load_state_dict(state)
    reference.train()
    collate = _collate(processor)
    reference(**collate(rows)).loss.backward()
    expected = {name: 0.5 * p.grad for name, p in reference.named_parameters() if p.grad is not None}
    # What averaging the two micro-batch means would give instead (the bug num_items_in_batch avoids).
    reference.zero_grad()
    for half in (rows[:2], rows[2:]):
        (reference(**collate(half)).loss / 2).backward()
    naive = {name: 0.5 * p.grad for name, p in reference.named_parameters() if p.grad is not None}

    model.load_state_dict(state)
    whole = _one_step(model, rows, processor, tmp_path, batch_size=4, accumulation=1)
    model.load_state_dict(state)
    accumulated = _one_step(model, rows, processor, tmp_path, batch_size=2, accumulation=2)
    model.load_state_dict(state)

    name = "text_decoder.cls.predictions.bias"  # reached by every target token
    assert (naive[name] - expected[name]).abs().max() > 1e-4  # the test can tell the two apart
    for key, delta in expected.items():
        torch.testing.assert_close(whole[key], delta, atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(accumulated[key], delta, atol=1e-6, rtol=1e-4)


def test_num_items_in_batch_divides_the_token_sum(parts):
    model, processor, rows = parts
    model = _without_dropout(model).eval()
    batch = _collate(processor)(rows)
    tokens = int((batch["labels"][:, 1:] != -100).sum())
    with torch.no_grad():
        mean = model(**batch).loss
        normalised = model(**batch, num_items_in_batch=torch.tensor(tokens)).loss
        doubled = model(**batch, num_items_in_batch=2 * tokens).loss
    torch.testing.assert_close(normalised, mean)
    torch.testing.assert_close(doubled, mean / 2)


def test_tag_labels_is_the_old_name_of_tag_targets(parts):
    model, processor, rows = parts
    model = model.eval()
    batch = _collate(processor)(rows)
    targets = torch.zeros(len(rows), model.config.num_tags)
    targets[0, 1] = targets[2, 3] = 1
    with torch.no_grad():
        new = model(**batch, tag_targets=targets)
        with pytest.warns(FutureWarning, match="tag_labels is renamed tag_targets"):
            old = model(**batch, tag_labels=targets)
    assert new.loss_tag is not None and torch.equal(new.loss_tag, old.loss_tag)
    with pytest.raises(ValueError, match="both tag_targets and its old name tag_labels"):
        model(**batch, tag_targets=targets, tag_labels=targets)
    pretraining = Tag2TextForPreTraining(model.config).eval()
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        out = pretraining(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                          attention_mask=batch["attention_mask"], labels=batch["labels"], tag_labels=targets,
                          loss_weights={"itc": 0, "itm": 0})
    assert out.loss_tag is not None and any(issubclass(w.category, FutureWarning) for w in caught)


def test_collator_batches_are_forward_arguments_and_workers_count_skipped_images(parts, tmp_path):
    model, processor, rows = parts
    names = model.config.tag_names
    records = [{"image": row["image"], "captions": [row["caption"]], "tag_ids": [i % len(names)], "index": i}
               for i, row in enumerate(rows)] * 3
    missing = [dict(record, image=str(tmp_path / f"gone{i}.png")) for i, record in enumerate(records[:3])]
    records = missing + records  # three missing images, one in each of the first batches
    collator = Tag2TextCollator(processor, names)
    loader = torch.utils.data.DataLoader(records, batch_size=5, collate_fn=collator, num_workers=2)
    batches = list(loader)
    assert collator.image_load_failures == 3  # counted in the worker processes, read here
    assert sum(b["pixel_values"].shape[0] for b in batches) == len(records) - 3

    pretraining = Tag2TextForPreTraining(model.config)
    forward_arguments = set(pretraining.forward.__code__.co_varnames[:pretraining.forward.__code__.co_argcount])
    assert set(batches[0]) <= forward_arguments
    with torch.no_grad():
        assert torch.isfinite(pretraining.eval()(**batches[0]).loss)  # straight in, nothing popped


def test_tag2text_trainer_logs_the_collators_skipped_training_images(parts, tmp_path):
    from tag2text.training.trainer import Tag2TextTrainer

    model, processor, rows = parts
    names = model.config.tag_names
    records = [{"image": row["image"], "captions": [row["caption"]], "tag_ids": [i % len(names)], "index": i}
               for i, row in enumerate(rows)] * 2
    records[1] = dict(records[1], image=str(tmp_path / "gone.png"))
    evaluation = [dict(records[0], image=str(tmp_path / "also-gone.png"))] + records[2:6]
    pretraining = Tag2TextForPreTraining(model.config)
    pretraining.load_state_dict(model.state_dict())
    trainer = Tag2TextTrainer(model=pretraining, train_dataset=records, eval_dataset=evaluation,
                              data_collator=Tag2TextCollator(processor, names),
                              args=_args(tmp_path, per_device_train_batch_size=4, max_steps=2, logging_steps=1,
                                         dataloader_num_workers=1, learning_rate=1e-4))
    trainer.train()
    logged = [entry["image_load_failures"] for entry in trainer.state.log_history if "image_load_failures" in entry]
    assert logged[-1] == 1 and all(count in (0, 1) for count in logged)
    metrics = trainer.evaluate()  # the training collator, on data with another missing image
    assert "eval_loss" in metrics
    assert trainer.run_summary()["image_load_failures"] == 1  # evaluation's skipped image is not a training one
