import math

import pytest
import torch
from torch import nn

import tiny_factory
from tag2text import Tag2TextForCaptioning, Tag2TextModel, asymmetric_loss
from tag2text.version_compat import disable_activation_checkpointing, enable_activation_checkpointing


def _inputs(processor, model, images=3):
    batch = processor(
        images=[tiny_factory.draw_image(s) for s in range(images)],
        text=["a red cat on the grass", "two dogs", "a man riding a bike"][:images],
        tags=[["cat", "grass"], ["dog"], "man | riding | bike"][:images],
        return_labels=True,
    )
    return batch


def test_output_shapes_and_size(model, processor):
    batch = _inputs(processor, model)
    with torch.no_grad():
        out = model(**batch)
    cfg = model.config
    patches = (cfg.vision_config.image_size // cfg.vision_config.patch_size // 2) ** 2
    assert out.image_embeds.shape == (3, 1 + patches, cfg.vision_hidden_size)
    assert out.tag_logits.shape == (3, cfg.num_tags)
    assert out.logits.shape == (*batch["input_ids"].shape, cfg.text_config.vocab_size)
    assert out.text_encoder_last_hidden_state.shape == (3, cfg.max_tag_length, cfg.text_config.hidden_size)
    assert torch.isfinite(out.loss) and out.loss_tag is None
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert model.main_input_name == "pixel_values"


def test_pooled_token_is_the_mean_of_patch_tokens(model, pixel_values):
    with torch.no_grad():
        embeds = model.get_image_embeddings(pixel_values)
    torch.testing.assert_close(embeds[:, 0], embeds[:, 1:].mean(dim=1), atol=1e-5, rtol=1e-5)


def _manual_tag_logits(model, image_embeds, heads):
    """Query2Label head written out with plain tensor ops on the interaction encoder's first layers."""
    hidden = model.tagging_head.label_embed.weight.unsqueeze(0).expand(image_embeds.shape[0], -1, -1)
    for layer in model.text_encoder.encoder.layer[: model.config.tagging_config.num_hidden_layers]:
        attn = layer.crossattention.self

        def split(x):
            b, n, w = x.shape
            return x.view(b, n, heads, w // heads).transpose(1, 2)

        q, k, v = split(attn.query(hidden)), split(attn.key(image_embeds)), split(attn.value(image_embeds))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        context = (probs @ v).transpose(1, 2).reshape(hidden.shape)
        out = layer.crossattention.output
        hidden = out.LayerNorm(out.dense(context) + hidden)
        ffn = nn.functional.gelu(layer.intermediate.dense(hidden))
        hidden = layer.output.LayerNorm(layer.output.dense(ffn) + hidden)
    return (hidden * model.tagging_head.classifier_weight).sum(-1) + model.tagging_head.classifier_bias


def test_tagging_head_shares_encoder_layers_with_its_own_head_count(model, pixel_values):
    with torch.no_grad():
        for layer in model.text_encoder.encoder.layer:  # sharpen attention so the head split shows
            layer.crossattention.self.query.weight.mul_(40)
        embeds = model.get_image_embeddings(pixel_values)
        logits = model.get_tag_logits(embeds)
        own_heads = _manual_tag_logits(model, embeds, model.config.tagging_config.num_attention_heads)
        encoder_heads = _manual_tag_logits(model, embeds, model.config.text_config.num_attention_heads)
    torch.testing.assert_close(logits, own_heads, atol=1e-5, rtol=1e-5)
    assert (logits - encoder_heads).abs().max() > 1e-4  # the head count matters
    with torch.no_grad():
        model.text_encoder.encoder.layer[0].intermediate.dense.weight.mul_(1.5)
        changed = model.get_tag_logits(embeds)
    assert (changed - logits).abs().max() > 1e-4  # shared storage, not a copy


def test_tag_queries_have_no_self_attention(model, pixel_values):
    with torch.no_grad():
        embeds = model.get_image_embeddings(pixel_values)
        logits = model.get_tag_logits(embeds)
        perm = torch.randperm(model.config.num_tags)
        head = model.tagging_head
        head.label_embed.weight.copy_(head.label_embed.weight[perm])
        head.classifier_weight.copy_(head.classifier_weight[perm])
        head.classifier_bias.copy_(head.classifier_bias[perm])
        permuted = model.get_tag_logits(embeds)
    torch.testing.assert_close(permuted, logits[:, perm], atol=1e-5, rtol=1e-5)


def test_encoder_ignores_padding_but_decoder_attends_to_every_tag_position(model, processor, pixel_values):
    tags = processor.encode_tags([["cat"], ["dog"], ["sky"]])
    ids, mask = tags["tag_input_ids"], tags["tag_attention_mask"]
    assert mask[:, -1].eq(0).all()
    changed = ids.clone()
    changed[:, -1] = processor.tokenizer.convert_tokens_to_ids("tree")
    with torch.no_grad():
        embeds = model.get_image_embeddings(pixel_values)
        a = model.encode_tags(ids, mask, embeds)[0]
        b = model.encode_tags(changed, mask, embeds)[0]
    real = mask.bool()
    torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)
    # As released: the decoder's cross-attention has no mask, so the pad positions' states reach it.
    captions = processor.encode_captions(["a cat"] * 3)
    with torch.no_grad():
        la = model.decode_text(captions["input_ids"], a, captions["attention_mask"])[1]
        lb = model.decode_text(captions["input_ids"], b, captions["attention_mask"])[1]
    assert (la - lb).abs().max() > 1e-6


def test_decoder_is_causal(model, processor, pixel_values):
    captions = processor.encode_captions(["a red cat sitting on the grass"])
    ids = captions["input_ids"].repeat(3, 1)
    changed = ids.clone()
    changed[:, 6] = processor.tokenizer.convert_tokens_to_ids("bus")
    with torch.no_grad():
        states = model(pixel_values=pixel_values).text_encoder_last_hidden_state
        a = model.decode_text(ids, states)[1]
        b = model.decode_text(changed, states)[1]
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=1e-5, rtol=1e-5)
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-5


def test_lm_loss_matches_a_direct_label_smoothed_cross_entropy(model, processor):
    batch = _inputs(processor, model)
    with torch.no_grad():
        out = model(**batch)
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    keep = labels != -100
    eps, vocab = 0.1, logits.shape[-1]
    nll = -log_probs[keep].gather(-1, labels[keep][:, None]).squeeze(-1)
    uniform = -log_probs[keep].sum(-1) / vocab
    expected = ((1 - eps) * nll + eps * uniform).mean()
    assert abs(out.loss_lm.item() - expected.item()) < 1e-5
    # the prompt ([DEC] a picture of) and padding are not supervised
    assert (batch["labels"][:, :4] == -100).all()


def test_asymmetric_loss_against_the_formula():
    torch.manual_seed(0)
    logits = torch.randn(3, 7) * 3
    targets = (torch.rand(3, 7) > 0.6).float()
    total = 0.0
    for x, y in zip(logits.flatten().tolist(), targets.flatten().tolist()):
        p = 1 / (1 + math.exp(-x))
        if y == 1:
            total += math.log(max(p, 1e-8))  # gamma_pos = 0
        else:
            p_neg = min(1 - p + 0.05, 1.0)
            total += math.log(max(p_neg, 1e-8)) * (1 - p_neg) ** 7
    assert abs(asymmetric_loss(logits, targets).item() - (-total)) < 1e-4


def test_tagging_loss_in_forward(model, processor):
    batch = _inputs(processor, model)
    labels = torch.zeros(3, model.config.num_tags)
    labels[0, 0] = labels[1, 1] = 1
    with torch.no_grad():
        out = model(**batch, tag_targets=labels)
    assert abs(out.loss_tag.item() - asymmetric_loss(out.tag_logits, labels).item()) < 1e-6
    assert abs(out.loss.item() - (out.loss_lm + out.loss_tag).item()) < 1e-5
    with pytest.raises(ValueError, match="must have shape"):
        model(**batch, tag_targets=labels[:, :3])


def test_save_reload_keeps_weights_ties_and_outputs(tmp_path, model, processor):
    batch = _inputs(processor, model)
    model.save_pretrained(tmp_path)
    reloaded, info = Tag2TextForCaptioning.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    reloaded.eval()
    emb = reloaded.text_decoder.bert.embeddings.word_embeddings.weight
    assert reloaded.text_decoder.cls.predictions.decoder.weight.data_ptr() == emb.data_ptr()
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, reloaded(**batch).logits, atol=1e-6, rtol=1e-6)
    assert (tmp_path / "generation_config.json").exists()
    base = Tag2TextModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(base(batch["pixel_values"]).tag_logits, model(**batch).tag_logits)


def test_tuple_and_dataclass_outputs_agree(model, processor):
    batch = _inputs(processor, model)
    with torch.no_grad():
        as_dict = model(**batch)
        as_tuple = model(**batch, return_dict=False)
    for a, b in zip(as_dict.to_tuple(), as_tuple):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)


def test_batch_equals_single_rows(model, processor):
    batch = _inputs(processor, model)
    with torch.no_grad():
        full = model(**batch)
        for row in range(3):
            single = model(**{k: v[row : row + 1] for k, v in batch.items()})
            torch.testing.assert_close(single.tag_logits, full.tag_logits[row : row + 1], atol=1e-5, rtol=1e-4)
            length = int(batch["attention_mask"][row].sum())
            torch.testing.assert_close(single.logits[:, :length], full.logits[row : row + 1, :length], atol=1e-4,
                                       rtol=1e-4)


def test_sdpa_and_eager_agree(tmp_path, model, processor):
    batch = _inputs(processor, model)
    model.save_pretrained(tmp_path)
    eager = Tag2TextForCaptioning.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = Tag2TextForCaptioning.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert eager.config.text_config._attn_implementation == "eager"
    assert sdpa.config.text_config._attn_implementation == "sdpa"
    with torch.no_grad():
        a, b = eager(**batch), sdpa(**batch)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.tag_logits, b.tag_logits, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        attn = eager(**batch, output_attentions=True)
    assert len(attn.attentions) == eager.config.text_config.num_hidden_layers
    assert attn.attentions[0].shape[-2:] == (batch["input_ids"].shape[1],) * 2


def test_text_layers_follow_the_models_default_attention(tmp_path, model, processor):
    """Built directly or loaded without attn_implementation, the model reports SDPA; its text layers (plain
    modules reading text_config) must run SDPA too, not fall back to eager silently."""
    from tag2text import modeling_tag2text_text as text_modules

    calls = []
    original = text_modules._attention_function

    def spy(implementation, output_attentions):
        function = original(implementation, output_attentions)
        calls.append(function is text_modules.eager_attention)
        return function

    model.save_pretrained(tmp_path)
    loaded = Tag2TextForCaptioning.from_pretrained(tmp_path).eval()
    assert loaded.config._attn_implementation == "sdpa"
    assert loaded.config.text_config._attn_implementation == "sdpa"
    assert Tag2TextModel(loaded.config).config.text_config._attn_implementation == "sdpa"
    text_modules._attention_function = spy
    try:
        with torch.no_grad():
            loaded(**_inputs(processor, loaded))
    finally:
        text_modules._attention_function = original
    assert calls and not any(calls)


def _train_step(model, batch):
    model.zero_grad()
    out = model(**batch, tag_targets=torch.eye(model.config.num_tags)[:3])
    embeds = out.image_embeds
    image_features = model.get_image_features(image_embeds=embeds).pooler_output
    itc = image_features @ model.get_text_features(batch["input_ids"]).pooler_output.T
    itm = model.get_itm_logits(batch["tag_input_ids"], batch["tag_attention_mask"], embeds)
    loss = out.loss + (itc / model.logit_temperature).logsumexp(-1).mean() + itm.logsumexp(-1).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_every_parameter_gets_a_gradient(tokenizer, processor):
    model = tiny_factory.make_model(tiny_factory.make_config(tokenizer)).train()
    _, grads = _train_step(model, _inputs(processor, model))
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in grads]
    assert not missing
    assert all(torch.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tokenizer, processor, use_reentrant):
    config = tiny_factory.make_config(tokenizer)
    config.text_config.hidden_dropout_prob = config.text_config.attention_probs_dropout_prob = 0.0
    config.vision_config.drop_path_rate = 0.0
    model = tiny_factory.make_model(config).train()
    batch = _inputs(processor, model)
    loss_a, grads_a = _train_step(model, batch)
    enable_activation_checkpointing(model, use_reentrant=use_reentrant)
    layers = [m for m in model.modules() if hasattr(m, "gradient_checkpointing")]
    assert layers and all(m.gradient_checkpointing for m in layers)
    loss_b, grads_b = _train_step(model, batch)
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-5, rtol=1e-4, msg=name)
    disable_activation_checkpointing(model)
    assert not any(m.gradient_checkpointing for m in layers)


def test_inputs_are_not_mutated(model, processor):
    batch = _inputs(processor, model)
    copies = {k: v.clone() for k, v in batch.items()}
    with torch.no_grad():
        model(**batch)
    model.generate(batch["pixel_values"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   tag_input_ids=batch["tag_input_ids"], max_new_tokens=3, num_beams=2)
    for key in batch:
        assert torch.equal(batch[key], copies[key]), key


def test_resize_token_embeddings_resizes_encoder_decoder_and_head(model):
    old = model.config.text_config.vocab_size
    model.resize_token_embeddings(old + 5)
    assert model.text_encoder.embeddings.word_embeddings.weight.shape[0] == old + 5
    assert model.text_decoder.bert.embeddings.word_embeddings.weight.shape[0] == old + 5
    head = model.text_decoder.cls.predictions
    assert head.bias.shape == (old + 5,) and head.decoder.weight.shape[0] == old + 5
    assert head.decoder.weight.data_ptr() == model.text_decoder.bert.embeddings.word_embeddings.weight.data_ptr()
    assert model.config.text_config.vocab_size == old + 5


def test_bad_pixel_values_are_rejected(model):
    with pytest.raises(ValueError, match="pixel_values must be"):
        model.get_image_embeddings(torch.zeros(3, 32, 32))
