"""Training objectives checked against independent computations (numpy, written out from the definitions)."""

import math

import numpy as np
import pytest
import torch
from transformers import TrainingArguments

import training_support as support
from tag2text.training import LossWeights, Tag2TextCollator, Tag2TextTrainer
from tag2text.training.losses import image_text_contrastive_loss, image_text_matching_loss, sample_hard_negatives
from tag2text.training.model_setup import make_processor


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("losses")
    dataset, tag_list = support.tagged_dataset(root / "data", 12)
    tokenizer = support.caption_tokenizer(root, [c for cs in dataset["captions"] for c in cs] + tag_list.names)
    return dataset, tag_list, tokenizer


def _batch(setup, model, count=6, shuffle=False):
    dataset, tag_list, tokenizer = setup
    processor = make_processor(tokenizer, model.config)
    collator = Tag2TextCollator(processor, model.config.tag_names, shuffle_tags=shuffle, seed=3)
    return processor, collator([dataset[i] for i in range(count)])


def _trainer(model, tmp_path, **kwargs):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=4)
    return Tag2TextTrainer(model=model, args=args, **kwargs)


def _asl_by_hand(logits, targets, gamma_neg=7.0, gamma_pos=0.0, clip=0.05, eps=1e-8):
    """The released AsymmetricLoss.forward, element by element in float64."""
    total = 0.0
    for x, y in zip(np.asarray(logits, dtype=np.float64).ravel(), np.asarray(targets, dtype=np.float64).ravel()):
        p = 1.0 / (1.0 + math.exp(-x))
        p_neg = min(1.0 - p + clip, 1.0)
        loss = y * math.log(max(p, eps)) + (1 - y) * math.log(max(p_neg, eps))
        pt = p * y + p_neg * (1 - y)
        gamma = gamma_pos * y + gamma_neg * (1 - y)
        total += loss * (1 - pt) ** gamma
    return -total


def _lm_by_hand(logits, labels, smoothing=0.1):
    """Mean over supervised positions of label-smoothed CE of next-token prediction."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    losses = []
    vocab = logits.shape[-1]
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            target = labels[b, t + 1]
            if target == -100:
                continue
            row = logits[b, t]
            log_probs = row - row.max() - math.log(np.exp(row - row.max()).sum())
            losses.append(-(1 - smoothing) * log_probs[target] - smoothing * log_probs.mean())
    assert vocab > 1
    return float(np.mean(losses))


def _itc_by_hand(image_features, text_features, temperature):
    sim = np.asarray(image_features, np.float64) @ np.asarray(text_features, np.float64).T / temperature

    def ce(m):
        m = m - m.max(axis=1, keepdims=True)
        log_softmax = m - np.log(np.exp(m).sum(axis=1, keepdims=True))
        return -np.mean(np.diag(log_softmax))

    return (ce(sim) + ce(sim.T)) / 2


def _image_features(model, embeds):
    return torch.nn.functional.normalize(model.vision_proj(embeds[:, 0]), dim=-1)


def _text_features(model, ids, mask):
    hidden = model.text_encoder(ids, mask, mode="text")[0]
    return torch.nn.functional.normalize(model.text_proj(hidden[:, 0]), dim=-1)


def test_compute_loss_matches_independent_computations(setup, tmp_path):
    dataset, tag_list, tokenizer = setup
    model = support.tiny_pretraining_model(tokenizer, tag_list.names).eval()  # eval: no dropout, so passes are comparable
    processor, batch = _batch(setup, model)
    # The prompt and the padding carry no LM loss.
    prompt = processor.prompt_length
    assert (batch["labels"][:, :prompt] == -100).all()
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    weights = LossWeights(tag=1.0, lm=0.5, itc=2.0, itm=0.25, tag_scale="lm")
    trainer = _trainer(model, tmp_path, loss_weights=weights)
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        parts = trainer.last_loss_components
        embeds = model.get_image_embeddings(batch["pixel_values"])
        tag_logits = model.get_tag_logits(embeds)
        states = model.encode_tags(batch["tag_input_ids"], batch["tag_attention_mask"], embeds)[0]
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    encoder_hidden_states=states, use_cache=False)
        image_features = _image_features(model, embeds)
        text_features = _text_features(model, batch["text_input_ids"], batch["text_attention_mask"])
        temperature = float(model.logit_temperature)
    asl = _asl_by_hand(tag_logits.numpy(), batch["tag_targets"].numpy())
    lm = _lm_by_hand(out.logits.numpy(), batch["labels"].numpy())
    itc = _itc_by_hand(image_features.numpy(), text_features.numpy(), temperature)
    assert parts["tag"] == pytest.approx(asl, rel=1e-4)
    assert parts["lm"] == pytest.approx(lm, rel=1e-4)
    assert parts["itc"] == pytest.approx(itc, rel=1e-4)
    # Released rescaling: the tagging term takes the LM loss's value.
    expected = 1.0 * lm + 0.5 * lm + 2.0 * itc + 0.25 * parts["itm"]
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    assert 0 < parts["itm"] < 5


def test_tag_loss_rescaling_keeps_direction_and_takes_lm_scale():
    logits = torch.randn(3, 5, requires_grad=True)
    targets = (torch.rand(3, 5) > 0.5).float()
    from tag2text import asymmetric_loss

    lm = torch.tensor(2.5)
    raw = asymmetric_loss(logits, targets)
    scaled = LossWeights(tag_scale="lm").scale_tag_loss(raw, lm, batch_size=3)
    assert float(scaled.detach()) == pytest.approx(2.5)
    (grad_scaled,) = torch.autograd.grad(scaled, logits, retain_graph=True)
    (grad_raw,) = torch.autograd.grad(raw, logits)
    torch.testing.assert_close(grad_scaled, grad_raw * (2.5 / float(raw)))
    assert float(LossWeights(tag_scale="batch").scale_tag_loss(raw, lm, 3)) == pytest.approx(float(raw) / 3)
    assert float(LossWeights(tag_scale="none").scale_tag_loss(raw, lm, 3)) == pytest.approx(float(raw))


def test_loss_weight_parsing_and_errors():
    w = LossWeights.parse("tag=2, itm=0", tag_scale="batch")
    assert (w.tag, w.lm, w.itc, w.itm, w.tag_scale) == (2.0, 1.0, 1.0, 0.0, "batch")
    with pytest.raises(ValueError, match="'foo=1'"):
        LossWeights.parse("foo=1")
    with pytest.raises(ValueError, match="'abc' is not a number"):
        LossWeights.parse("lm=abc")
    with pytest.raises(ValueError, match="all loss weights are 0"):
        LossWeights.parse("tag=0,lm=0,itc=0,itm=0")
    with pytest.raises(ValueError, match="tag loss scale"):
        LossWeights(tag_scale="mean")


def test_itc_with_repeated_images_spreads_targets_over_positives():
    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    ids = torch.tensor([7, 7, 3, 5])  # rows 0 and 1 show the same image
    out = image_text_contrastive_loss(image, text, torch.tensor(0.1), sample_ids=ids)
    sim = (image @ text.T / 0.1).double().numpy()
    targets = np.array([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])

    def soft_ce(m):
        m = m - m.max(axis=1, keepdims=True)
        log_softmax = m - np.log(np.exp(m).sum(axis=1, keepdims=True))
        return -np.mean((targets * log_softmax).sum(axis=1))

    assert float(out.loss) == pytest.approx((soft_ce(sim) + soft_ce(sim.T)) / 2, rel=1e-5)
    assert out.positives.tolist() == (targets > 0).tolist()


def test_hard_negatives_never_positive_and_follow_similarity():
    generator = torch.Generator().manual_seed(0)
    sim = torch.tensor([[5.0, 4.0, 0.0, -3.0]] * 3)
    positives = torch.tensor([[True, False, False, False], [True, True, False, False], [True, True, True, True]])
    draws = torch.stack([sample_hard_negatives(sim, positives, generator) for _ in range(4000)])
    assert (draws[:, 2] == -1).all()  # no negative in the row: none drawn
    row0, row1 = draws[:, 0], draws[:, 1]
    assert not (row0 == 0).any() and not (row1 <= 1).any()
    # softmax(4, 0, -3) restricted to the negatives: column 1 dominates row 0.
    expected = torch.softmax(torch.tensor([4.0, 0.0, -3.0]), 0)[0]
    assert (row0 == 1).float().mean().item() == pytest.approx(float(expected), abs=0.03)
    assert set(row1.tolist()) <= {2, 3}


def test_itm_pairs_each_text_with_another_image_and_each_image_with_another_text(setup):
    dataset, tag_list, tokenizer = setup
    model = support.tiny_model(tokenizer, tag_list.names).eval()
    _, batch = _batch(setup, model, count=5)
    with torch.no_grad():
        embeds = model.get_image_embeddings(batch["pixel_values"])
        con = image_text_contrastive_loss(_image_features(model, embeds),
                                          _text_features(model, batch["text_input_ids"], batch["text_attention_mask"]),
                                          model.logit_temperature, sample_ids=batch["sample_ids"])
        ids = batch["text_input_ids"].clone()
        ids[:, 0] = model.config.text_config.enc_token_id
        for _ in range(20):
            out = image_text_matching_loss(model, embeds, ids, batch["text_attention_mask"], con)
            rows = torch.arange(5)
            assert (out.negative_images != rows).all() and (out.negative_texts != rows).all()
    assert out.logits.shape == (15, 2)
    assert out.labels.tolist() == [1] * 5 + [0] * 10


def test_every_parameter_gets_a_gradient_when_every_loss_is_on(setup, tmp_path):
    """What DDP without find_unused_parameters (the Trainer's default under gradient checkpointing) needs."""
    dataset, tag_list, tokenizer = setup
    model = support.tiny_pretraining_model(tokenizer, tag_list.names).train()
    _, batch = _batch(setup, model, count=4)
    trainer = _trainer(model, tmp_path, loss_weights=LossWeights(tag_scale="batch"))
    trainer.compute_loss(model, dict(batch)).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen


# Modules that only the objective weighted 0 trains (besides what other objectives share).
ONLY_TRAINED_BY = {
    "tag=0": ("tagging_head.",),
    "lm=0": ("text_decoder.",),
    "itm=0": ("itm_head.",),
    "itc=0": ("vision_proj.", "text_proj.", "alignment."),
}


@pytest.mark.parametrize("weights", sorted(ONLY_TRAINED_BY))
def test_a_zero_weight_skips_its_objective(setup, tmp_path, weights):
    dataset, tag_list, tokenizer = setup
    model = support.tiny_pretraining_model(tokenizer, tag_list.names).train()
    _, batch = _batch(setup, model, count=4)
    parsed = LossWeights.parse(weights, tag_scale="batch")
    trainer = _trainer(model, tmp_path, loss_weights=parsed)
    trainer.compute_loss(model, dict(batch)).backward()
    skipped = weights.split("=")[0]
    assert skipped not in trainer.last_loss_components
    assert set(trainer.last_loss_components) == {"tag", "lm", "itc", "itm"} - {skipped}
    without = {n for n, p in model.named_parameters() if p.grad is None}
    prefixes = ONLY_TRAINED_BY[weights]
    assert without and all(n.startswith(prefixes) for n in without), sorted(without)[:5]
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith(prefixes))


def test_the_trainer_refuses_a_model_without_the_pretraining_forward(setup, tmp_path):
    dataset, tag_list, tokenizer = setup
    with pytest.raises(TypeError, match="Tag2TextForPreTraining"):
        _trainer(support.tiny_model(tokenizer, tag_list.names), tmp_path)
