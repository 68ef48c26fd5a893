"""Tag2TextForPreTraining: the four losses of one forward, checked against a reference written out here.

``_reference_losses`` is the loss computation of the trainer as it was before the pre-training forward existed
(``Tag2TextTrainer.compute_loss`` with ITC/ITM in ``training/losses.py``), written again from the formulas on
the model's building blocks (vision tower, tagging head, encoder, decoder): asymmetric loss summed, label-smoothed
next-token CE, symmetric InfoNCE with soft targets over equal sample ids, one hard negative per row drawn from
softmax(sim) + 1e-4 with positives masked (texts' negatives first, with the global RNG), 2-way CE on
positives then negatives. Before the forward replaced the trainer's computation, this reference was checked
equal to ``compute_loss`` on the batch below (commit 912c0f7: loss_tag 12.379796, loss_lm 3.615925, loss_itc
2.145232, loss_itm 0.703816).
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
from tag2text.modeling_tag2text_pretraining import Tag2TextForPreTraining
from tag2text.training import Tag2TextCollator
from tag2text.training.model_setup import make_processor
from tag2text.version_compat import enable_activation_checkpointing

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
    # The focusing weight carries no gradient (the release's disable_torch_grad_focal_loss=True).
    return -(log_likelihood * ((1 - pt) ** (gamma_neg * (1 - targets))).detach()).sum()


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


def _reference_losses(model, batch, seed, rank_rows=None, tensors=False):
    """Today's four raw loss values for ``batch``. ``rank_rows`` (start, stop): the losses of the process that
    holds only those rows of the batch while contrasting against all of them (two-process ITC/ITM).
    ``tensors``: the loss tensors, with their graph (for gradients)."""
    cfg = model.config.text_config
    pixel_values = batch["pixel_values"]
    start, stop = rank_rows or (0, pixel_values.shape[0])
    local = slice(start, stop)
    torch.manual_seed(seed)
    with torch.set_grad_enabled(tensors):
        embeds = model.get_image_embeddings(pixel_values)
        tag_logits = model.get_tag_logits(embeds[local])
        loss_tag = _asl(tag_logits, batch["tag_targets"][local])
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

        with torch.no_grad():
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
    losses = {"tag": loss_tag, "lm": loss_lm, "itc": loss_itc, "itm": loss_itm}
    return losses if tensors else {name: float(value) for name, value in losses.items()}


def _models(setup):
    """(captioning, pre-training) tiny models with the same weights, in eval mode (no dropout)."""
    dataset, tag_list, tokenizer = setup
    captioning = support.tiny_model(tokenizer, tag_list.names, seed=0).eval()
    model = Tag2TextForPreTraining(captioning.config)
    model.load_state_dict(captioning.state_dict())
    return captioning, model.eval()


def _inputs(batch):
    """The collator's batch as it is: every key is a forward argument."""
    return dict(batch)


NAMES = ("tag", "lm", "itc", "itm")


def test_forward_gives_the_losses_of_today(setup):
    captioning, model = _models(setup)
    batch = _batch(setup, model.config)
    reference = _reference_losses(model, batch, SEED)
    torch.manual_seed(SEED)
    with torch.no_grad():
        out = model(**_inputs(batch))
    for name in NAMES:
        assert float(out[f"loss_{name}"]) == pytest.approx(reference[name], abs=1e-6), name
    # Default weights: all 1 with the released rescaling (the tagging term takes the LM loss's value).
    expected = 2 * reference["lm"] + reference["itc"] + reference["itm"]
    assert float(out.loss) == pytest.approx(expected, abs=1e-5)
    # The logits each loss came from.
    assert out.tag_logits.shape == (6, len(model.config.tag_names))
    assert out.logits.shape[:2] == batch["input_ids"].shape
    assert out.logits_per_image.shape == out.logits_per_text.shape == (6, 6)
    assert out.itm_logits.shape == (18, 2) and out.itm_labels.tolist() == [1] * 6 + [0] * 12
    itc_by_hand = (F.cross_entropy(out.logits_per_image, torch.arange(6))
                   + F.cross_entropy(out.logits_per_text, torch.arange(6))) / 2
    assert float(out.loss_itc) == pytest.approx(float(itc_by_hand), abs=1e-6)  # one caption per image here
    assert float(out.loss_itm) == pytest.approx(float(F.cross_entropy(out.itm_logits, out.itm_labels)), abs=1e-6)


def test_gradients_are_those_of_today(setup):
    """The weighted sum's gradient on every parameter equals the reference's (ITC features gathered with
    gradients, ITM through the hard negatives' images)."""
    _, model = _models(setup)
    batch = _batch(setup, model.config)
    reference = _reference_losses(model, batch, SEED, tensors=True)
    total = reference["tag"] / 6 + reference["lm"] + 2.0 * reference["itc"] + 0.5 * reference["itm"]
    names = [n for n, _ in model.named_parameters()]
    expected = dict(zip(names, torch.autograd.grad(total, list(model.parameters()), allow_unused=True)))
    torch.manual_seed(SEED)
    out = model(**_inputs(batch), loss_weights={"itc": 2.0, "itm": 0.5, "tag_scale": "batch"})
    assert float(out.loss.detach()) == pytest.approx(float(total.detach()), abs=1e-5)
    out.loss.backward()
    assert all(g is not None for g in expected.values())
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name], rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_trainer_loss_is_the_weighted_sum_of_the_forward(setup, tmp_path):
    from transformers import TrainingArguments

    from tag2text.training import LossWeights, Tag2TextTrainer

    captioning, model = _models(setup)
    batch = _batch(setup, model.config)
    weights = LossWeights(tag=2.0, lm=0.5, itc=3.0, itm=0.25, tag_scale="batch")
    trainer = Tag2TextTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True,
                                                                  report_to="none"), loss_weights=weights)
    assert trainer.args.ddp_find_unused_parameters is None  # the Trainer's default stays
    reference = _reference_losses(model, batch, SEED)
    torch.manual_seed(SEED)
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
    for name in NAMES:
        assert trainer.last_loss_components[name] == pytest.approx(reference[name], abs=1e-6), name
    expected = 2.0 * reference["tag"] / 6 + 0.5 * reference["lm"] + 3.0 * reference["itc"] + 0.25 * reference["itm"]
    assert float(loss) == pytest.approx(expected, abs=1e-5)
    assert trainer.last_itc_global_batch == 6


def test_hidden_states_and_attentions_on_request(setup):
    """output_hidden_states / output_attentions (call or config) give the decoder's states over the caption and
    the vision tower's, as transformers' own Swin computes them; the losses do not change."""
    captioning, model = _models(setup)
    batch = _batch(setup, model.config, count=3)
    inputs = _inputs(batch)
    torch.manual_seed(SEED)
    with torch.no_grad():
        plain = model(**inputs)
    assert plain.hidden_states is plain.attentions is plain.vision_hidden_states is None
    torch.manual_seed(SEED)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, output_attentions=True)
        swin = model.vision_model(pixel_values=batch["pixel_values"], output_hidden_states=True,
                                  output_attentions=True)
        # the decoder's states over the caption, given the same tags, from the captioning model
        decoded = captioning(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                             attention_mask=batch["attention_mask"], tag_input_ids=batch["tag_input_ids"],
                             tag_attention_mask=batch["tag_attention_mask"], output_hidden_states=True,
                             output_attentions=True)
    for name in NAMES:
        assert float(out[f"loss_{name}"]) == pytest.approx(float(plain[f"loss_{name}"]), abs=1e-6), name
    text = model.config.text_config
    length = batch["input_ids"].shape[1]
    assert len(out.hidden_states) == text.num_hidden_layers + 1
    assert all(h.shape == (3, length, text.hidden_size) for h in out.hidden_states)
    assert len(out.attentions) == len(out.cross_attentions) == text.num_hidden_layers
    assert out.attentions[0].shape == (3, text.num_attention_heads, length, length)
    for got, want in zip(out.hidden_states + out.attentions + out.cross_attentions,
                         decoded.hidden_states + decoded.attentions + decoded.cross_attentions):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert len(out.vision_hidden_states) == len(swin.hidden_states)
    for got, want in zip(out.vision_hidden_states + out.vision_attentions, swin.hidden_states + swin.attentions):
        torch.testing.assert_close(got, want)
    # The config's flags count when the call gives none; tuple output keeps every field in order.
    model.config.output_hidden_states = True
    try:
        with torch.no_grad():
            by_config = model(**inputs, loss_weights={"itc": 0, "itm": 0})
            as_tuple = model(**inputs, loss_weights={"itc": 0, "itm": 0}, return_dict=False)
    finally:
        model.config.output_hidden_states = False
    assert len(by_config.hidden_states) == text.num_hidden_layers + 1 and by_config.attentions is None
    assert len(as_tuple) == len(by_config.to_tuple())
    torch.testing.assert_close(as_tuple[-1][0], by_config.vision_hidden_states[0])


def test_caption_without_labels_gives_decoder_logits(setup):
    """A caption without labels still runs the decoder: its logits, no LM loss (ITC/ITM from the caption)."""
    captioning, model = _models(setup)
    batch = _batch(setup, model.config, count=2)
    inputs = {k: batch[k] for k in ("pixel_values", "input_ids", "attention_mask", "tag_input_ids",
                                    "tag_attention_mask")}
    with torch.no_grad():
        out = model(**inputs)
        want = captioning(**inputs).logits
    assert out.loss_lm is None and out.loss_itc is not None
    torch.testing.assert_close(out.logits, want, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        skipped = model(**inputs, loss_weights={"lm": 0})
    assert skipped.logits is None and skipped.hidden_states is None


def test_loads_a_captioning_checkpoint_and_saves_one(setup, tmp_path):
    captioning, _ = _models(setup)
    captioning.save_pretrained(tmp_path / "captioning")
    model = Tag2TextForPreTraining.from_pretrained(tmp_path / "captioning")
    expected = captioning.state_dict()
    assert model.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1.5)  # trained
    model.save_pretrained(tmp_path / "trained")
    saved = json.loads((tmp_path / "trained" / "config.json").read_text())
    assert saved["architectures"] == ["Tag2TextForCaptioning"]
    reference = json.loads((tmp_path / "captioning" / "config.json").read_text())
    assert saved.get("auto_map") == reference.get("auto_map")
    assert sorted(p.name for p in (tmp_path / "trained").iterdir()) == \
        sorted(p.name for p in (tmp_path / "captioning").iterdir())
    back = Tag2TextForCaptioning.from_pretrained(tmp_path / "trained")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in back.state_dict().items())
    # The model saved from is still whole: its weights are not the placeholders the save went through.
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert back.get_output_embeddings().weight is back.text_decoder.bert.embeddings.word_embeddings.weight


def test_generates_as_the_captioning_model(setup):
    captioning, model = _models(setup)
    pixel_values = _batch(setup, model.config, count=2)["pixel_values"]
    for kwargs in ({"num_beams": 1, "max_new_tokens": 6}, {"num_beams": 2, "max_new_tokens": 5}):
        assert torch.equal(model.generate(pixel_values, **kwargs), captioning.generate(pixel_values, **kwargs))


def test_gradients_reach_every_parameter_with_gradient_checkpointing(setup):
    captioning, model = _models(setup)
    model.train()
    enable_activation_checkpointing(model)  # transformers' default: non-reentrant
    batch = _batch(setup, model.config, count=4)
    torch.manual_seed(SEED)
    out = model(**_inputs(batch), loss_weights={"tag_scale": "batch"})
    out.loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    plain = _models(setup)[1].train()
    torch.manual_seed(SEED)
    again = plain(**_inputs(batch), loss_weights={"tag_scale": "batch"})
    assert float(again.loss.detach()) == pytest.approx(float(out.loss.detach()), abs=1e-5)


def test_bad_loss_weights_and_missing_inputs_are_named(setup):
    _, model = _models(setup)
    batch = _batch(setup, model.config, count=2)
    with pytest.raises(ValueError, match="unknown entries \\['lr'\\]"):
        model(**_inputs(batch), loss_weights={"lr": 1.0})
    with pytest.raises(ValueError, match="loss weight itc=-1"):
        model(**_inputs(batch), loss_weights={"itc": -1})
    with pytest.raises(TypeError, match="unexpected arguments \\['foo'\\]"):
        model(**_inputs(batch), foo=torch.ones(1))
    with pytest.raises(ValueError, match="tag loss scale 'lm' needs the LM loss"):
        model(pixel_values=batch["pixel_values"], tag_targets=batch["tag_targets"], loss_weights={"itc": 0, "itm": 0})
    with pytest.raises(ValueError, match="\\['sample_ids'\\] belong to the pre-training losses"):
        model(input_ids=batch["input_ids"], encoder_hidden_states=torch.zeros(2, 3, model.config.text_config.hidden_size),
              sample_ids=batch["sample_ids"])
    with pytest.raises(TypeError, match="unexpected arguments \\['use_cache'\\]"):
        model(**_inputs(batch), use_cache=True)  # a training forward keeps no cache


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch, torch.distributed as dist
    from tag2text.modeling_tag2text_pretraining import Tag2TextForPreTraining
    rank, model_dir, batch_file, start, stop, seed, out = sys.argv[1:8]
    rank, start, stop, seed = int(rank), int(start), int(stop), int(seed)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model = Tag2TextForPreTraining.from_pretrained(model_dir).eval()
    batch = torch.load(batch_file, weights_only=True)
    local = {k: v[start:stop] for k, v in batch.items()}
    torch.manual_seed(seed)
    with torch.no_grad():
        result = model(**local)
    json.dump({k: float(result["loss_" + k]) for k in ("tag", "lm", "itc", "itm")} |
              {"global": int(result.logits_per_image.shape[1])}, open(out, "w"))
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_contrast_and_match_against_the_global_batch(setup, tmp_path):
    """Each of two gloo processes holds part of the batch (4 and 2 rows); its losses equal the reference's for
    those rows contrasted against all 6, and its ITM negatives come from all 6."""
    captioning, model = _models(setup)
    batch = _inputs(_batch(setup, model.config))
    captioning.save_pretrained(tmp_path / "model")
    torch.save(batch, tmp_path / "batch.pt")
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = support.subprocess_env()
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    rows = [(0, 4), (4, 6)]
    # Each process logs to a file, not a pipe: a pipe read only after the other process ends fills up (transformers
    # 5.0's loading progress bar writes a line per tensor) and blocks its writer while the other waits for it in
    # all_gather.
    log_files = [open(tmp_path / f"r{rank}.log", "w") for rank in range(len(rows))]
    procs = [subprocess.Popen([support.PYTHON, str(script), str(rank), str(tmp_path / "model"),
                               str(tmp_path / "batch.pt"), str(start), str(stop), str(SEED + rank),
                               str(tmp_path / f"r{rank}.json")], env=env, stdout=log_files[rank],
                              stderr=subprocess.STDOUT, text=True) for rank, (start, stop) in enumerate(rows)]
    for proc, log_file in zip(procs, log_files):
        proc.wait(timeout=300)
        log_file.close()
    logs = [(tmp_path / f"r{rank}.log").read_text() for rank in range(len(rows))]
    assert all(p.returncode == 0 for p in procs), [log[-3000:] for log in logs]
    for rank, span in enumerate(rows):
        got = json.loads((tmp_path / f"r{rank}.json").read_text())
        assert got["global"] == 6
        reference = _reference_losses(model, batch, SEED + rank, rank_rows=span)
        for name in NAMES:
            assert got[name] == pytest.approx(reference[name], abs=1e-6), (rank, name)


def test_gradients_repeat_bit_for_bit_at_the_quickstart_size(tmp_path):
    """The same batch, seed and weights give identical gradients on every backward pass, with two threads at the
    quickstart's size. ITM draws one hard-negative image per text, often the same image for several texts; the
    gradient of those repeated rows used to be added in a thread-dependent order (the vision tower's gradients
    differed by up to 2e-7 between passes, and two quickstart runs of one seed by a point of caption accuracy)."""
    from tag2text import preset_config

    dataset, tag_list = support.tagged_dataset(tmp_path / "data", 32, seed=4)
    tokenizer = support.caption_tokenizer(tmp_path, [c for cs in dataset["captions"] for c in cs] + tag_list.names)
    config = preset_config("small", tokenizer=tokenizer, tag_names=tag_list.names)
    torch.manual_seed(0)
    model = Tag2TextForPreTraining(config).train()
    collator = Tag2TextCollator(make_processor(tokenizer, config), config.tag_names, shuffle_tags=True, seed=3)
    batch = _inputs(collator([dataset[i] for i in range(32)]))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        passes = []
        for _ in range(3):
            torch.manual_seed(1)  # the same dropout masks and hard negatives
            model.zero_grad(set_to_none=True)
            output = model(**batch, loss_weights={"tag": 1, "lm": 1, "itc": 1, "itm": 1})
            output.loss.backward()
            passes.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    finally:
        torch.set_num_threads(threads)
    for other in passes[1:]:
        assert other.keys() == passes[0].keys()
        for name in passes[0]:
            assert torch.equal(other[name], passes[0][name]), name
