"""Tag2TextForPreTraining: the four losses of one forward, checked against a reference written out here.

``_reference_losses`` is the loss computation of the trainer as it was before the pre-training forward existed
(``Tag2TextTrainer.compute_loss`` with ITC/ITM in ``training/losses.py``), written again from the formulas on
the model's building blocks (vision tower, tagging head, encoder, decoder): asymmetric loss summed, label-smoothed
next-token CE, symmetric InfoNCE with soft targets over equal sample ids, one hard negative per row drawn from
softmax(sim) + 1e-4 with positives masked (texts' negatives first, with the global RNG), 2-way CE on
positives then negatives.
"""

import json
import socket
import subprocess
import textwrap

import pytest
import torch
import torch.nn.functional as F

import training_support as support
from tag2text import Tag2TextForCaptioning
from tag2text.training import Tag2TextCollator
from tag2text.training.model_setup import make_processor

SEED = 7


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretraining")
    dataset, tag_list = support.tagged_dataset(root / "data", 12)
    tokenizer = support.caption_tokenizer(root, [c for cs in dataset["captions"] for c in cs] + tag_list.names)
    return dataset, tag_list, tokenizer


def _batch(setup, config, count=6, start=0):
    dataset, tag_list, tokenizer = setup
    processor = make_processor(tokenizer, config)
    collator = Tag2TextCollator(processor, config.tag_names, shuffle_tags=True, seed=3)
    return collator([dataset[i] for i in range(start, start + count)])


# -- the reference ---------------------------------------------------------------------------------------------


def _asl(logits, targets, gamma_neg=7.0, clip=0.05, eps=1e-8):
    p = torch.sigmoid(logits.float())
    p_neg = (1 - p + clip).clamp(max=1.0)
    log_likelihood = targets * torch.log(p.clamp(min=eps)) + (1 - targets) * torch.log(p_neg.clamp(min=eps))
    pt = p * targets + p_neg * (1 - targets)
    return -(log_likelihood * (1 - pt) ** (gamma_neg * (1 - targets))).sum()


def _smoothed_ce(logits, labels, smoothing=0.1):
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    keep = labels != -100
    log_probs = torch.log_softmax(logits[keep], dim=-1)
    target = labels[keep]
    nll = -log_probs.gather(1, target[:, None]).squeeze(1)
    return ((1 - smoothing) * nll - smoothing * log_probs.mean(dim=-1)).mean()


def _draw_negatives(sim, positives):
    weights = (torch.softmax(sim.float(), dim=1) + 1e-4).masked_fill(positives, 0.0)
    return torch.multinomial(weights, 1).squeeze(1)


def _encoder_cls(model, ids, mask, image_embeds=None):
    mode = "text" if image_embeds is None else "multimodal"
    return model.text_encoder(ids, mask, image_embeds, mode=mode)[0][:, 0]


def _reference_losses(model, batch, seed, rank_rows=None):
    """Today's four raw loss values for ``batch``. ``rank_rows`` (start, stop): the losses of the process that
    holds only those rows of the batch while contrasting against all of them (two-process ITC/ITM)."""
    cfg = model.config.text_config
    pixel_values = batch["pixel_values"]
    start, stop = rank_rows or (0, pixel_values.shape[0])
    local = slice(start, stop)
    torch.manual_seed(seed)
    with torch.no_grad():
        embeds = model.get_image_embeddings(pixel_values)
        tag_logits = model.get_tag_logits(embeds[local])
        loss_tag = _asl(tag_logits, batch["tag_labels"][local])
        states = model.encode_tags(batch["tag_input_ids"][local], batch["tag_attention_mask"][local], embeds[local])[0]
        lm_logits = Tag2TextForCaptioning.forward(
            model, input_ids=batch["input_ids"][local], attention_mask=batch["attention_mask"][local],
            encoder_hidden_states=states, use_cache=False, return_dict=True).logits
        loss_lm = _smoothed_ce(lm_logits, batch["labels"][local], cfg.label_smoothing)

        text_ids, text_mask = batch["text_input_ids"], batch["text_attention_mask"]
        image_features = F.normalize(model.vision_proj(embeds[:, 0]), dim=-1)
        text_features = F.normalize(model.text_proj(_encoder_cls(model, text_ids, text_mask)), dim=-1)
        temperature = model.alignment.logit_temperature.clamp(0.001, 0.5)
        sim_i2t = image_features[local] @ text_features.T / temperature
        sim_t2i = text_features[local] @ image_features.T / temperature
        ids = batch["sample_ids"]
        positives = ids[local, None] == ids[None, :]
        targets = positives.float() / positives.float().sum(1, keepdim=True)
        loss_itc = (-(torch.log_softmax(sim_i2t, 1) * targets).sum(1).mean()
                    - (torch.log_softmax(sim_t2i, 1) * targets).sum(1).mean()) / 2

        negative_images = _draw_negatives(sim_t2i, positives)
        negative_texts = _draw_negatives(sim_i2t, positives)
        itm_ids = text_ids.clone()
        itm_ids[:, 0] = cfg.enc_token_id
        pair_ids = torch.cat([itm_ids[local], itm_ids[local], itm_ids[negative_texts]])
        pair_mask = torch.cat([text_mask[local], text_mask[local], text_mask[negative_texts]])
        pair_images = torch.cat([embeds[local], embeds[negative_images], embeds[local]])
        itm_logits = model.itm_head(_encoder_cls(model, pair_ids, pair_mask, pair_images))
        rows = stop - start
        labels = torch.cat([torch.ones(rows, dtype=torch.long), torch.zeros(2 * rows, dtype=torch.long)])
        loss_itm = F.cross_entropy(itm_logits.float(), labels)
    return {"tag": float(loss_tag), "lm": float(loss_lm), "itc": float(loss_itc), "itm": float(loss_itm)}


def _tiny_model(setup, cls_name="Tag2TextForCaptioning"):
    import tag2text

    dataset, tag_list, tokenizer = setup
    captioning = support.tiny_model(tokenizer, tag_list.names, seed=0)
    if cls_name == "Tag2TextForCaptioning":
        return captioning.eval()
    model = getattr(tag2text, cls_name)(captioning.config)
    model.load_state_dict(captioning.state_dict())
    return model.eval()


def test_reference_reproduces_the_trainer_of_today(setup, tmp_path):
    """Run once against the trainer's compute_loss before the pre-training forward replaced it."""
    from transformers import TrainingArguments

    from tag2text.training import LossWeights, Tag2TextTrainer

    model = _tiny_model(setup)
    batch = _batch(setup, model.config)
    trainer = Tag2TextTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True,
                                                                  report_to="none"),
                              loss_weights=LossWeights(tag_scale="batch"))
    torch.manual_seed(SEED)
    with torch.no_grad():
        trainer.compute_loss(model, dict(batch))
    today = trainer.last_loss_components
    reference = _reference_losses(model, batch, SEED)
    print(json.dumps({"today": today, "reference": reference}))
    for name in ("tag", "lm", "itc", "itm"):
        assert today[name] == pytest.approx(reference[name], abs=1e-6), name
