"""The models keep transformers' model contract: outputs under the names generation reads, the config's output
flags, feature methods returning ModelOutputs, generation from any stage of the image side, resizing, saved
sub-configs and accelerate's offload."""

import inspect
import os

import pytest
import torch
from transformers import GenerationMixin, SwinConfig
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutputWithPooling

import tiny_factory
from tag2text import Tag2TextConfig, Tag2TextForCaptioning, Tag2TextModel, Tag2TextTextConfig, Tag2TextTaggingConfig
from tag2text.version_compat import (
    TRANSFORMERS_VERSION,
    assisted_generation_supported,
    enable_activation_checkpointing,
    swin_block_parameter_names,
)

GREEDY = {"num_beams": 1, "max_new_tokens": 4, "min_new_tokens": 4}


@pytest.mark.parametrize("mode", [{"num_beams": 1}, {"num_beams": 2}, {"num_beams": 1, "do_sample": True}],
                         ids=["greedy", "beam", "sample"])
def test_generate_returns_decoder_attentions_and_hidden_states(model, pixel_values, mode):
    out = model.generate(pixel_values, max_new_tokens=4, min_new_tokens=4, return_dict_in_generate=True,
                         output_attentions=True, output_hidden_states=True, **mode)
    layers = model.config.text_config.num_hidden_layers
    rows = pixel_values.shape[0] * mode["num_beams"]
    assert len(out.attentions) == len(out.hidden_states) == 4  # one entry per generated token
    assert len(out.attentions[0]) == layers and len(out.hidden_states[0]) == layers + 1
    prompt = 4  # [DEC] a picture of
    assert out.attentions[0][0].shape == (rows, model.config.text_config.num_attention_heads, prompt, prompt)
    assert out.attentions[1][0].shape[-2:] == (1, prompt + 1)  # the cached step attends to everything so far
    # the attention rows are probabilities over the causal prefix
    first = out.attentions[0][0]
    torch.testing.assert_close(first.sum(-1), torch.ones(first.shape[:-1]))
    assert first[..., 0, 1:].abs().max() == 0


def test_forward_honours_the_config_output_flags(model, processor, pixel_values):
    batch = processor(images=[tiny_factory.draw_image(s) for s in range(3)], text=["a cat"] * 3)
    plain = model(**batch)
    assert plain.attentions is None and plain.hidden_states is None and plain.vision_hidden_states is None
    model.set_attn_implementation("eager")  # transformers allows config.output_attentions with eager only
    model.config.output_attentions = True
    model.config.output_hidden_states = True
    flagged = model(**batch)
    layers = model.config.text_config.num_hidden_layers
    assert len(flagged.attentions) == layers and len(flagged.hidden_states) == layers + 1
    assert len(flagged.cross_attentions) == layers
    torch.testing.assert_close(flagged.logits, plain.logits)
    # the vision tower's own outputs, compared with the tower run on its own
    tower = model.vision_model(pixel_values=batch["pixel_values"], output_hidden_states=True, output_attentions=True)
    assert len(flagged.vision_hidden_states) == len(tower.hidden_states)
    mine_all = flagged.vision_hidden_states + flagged.vision_attentions
    for mine, reference in zip(mine_all, tower.hidden_states + tower.attentions):
        torch.testing.assert_close(mine, reference)
    model.config.output_attentions = False
    assert model(**batch).attentions is None
    assert model(**batch, output_attentions=True).attentions is not None  # a call argument wins over the config


def test_base_model_reports_interaction_encoder_and_vision_outputs(config, pixel_values, processor):
    base = tiny_factory.make_model(config, cls=Tag2TextModel)
    tags = processor.encode_tags([["cat"], ["dog"], ["sky"]])
    out = base(pixel_values, **tags, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == config.text_config.num_hidden_layers + 1
    assert out.vision_hidden_states is not None and out.vision_attentions is not None
    torch.testing.assert_close(out.image_embeds, base.get_image_embeddings(pixel_values))


def test_feature_methods_return_pooled_projections(model, pixel_values, processor):
    images = model.get_image_features(pixel_values)
    assert isinstance(images, BaseModelOutputWithPooling)
    embeds = model.get_image_embeddings(pixel_values)
    torch.testing.assert_close(images.last_hidden_state, embeds)
    # independent: the projection as a plain matrix product on the pooled token
    expected = embeds[:, 0, :] @ model.vision_proj.weight.T + model.vision_proj.bias
    torch.testing.assert_close(images.pooler_output, expected)
    assert images.hidden_states is None
    with_states = model.get_image_features(pixel_values, output_hidden_states=True, output_attentions=True)
    assert with_states.hidden_states is not None and with_states.attentions is not None
    as_tuple = model.get_image_features(image_embeds=embeds, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[1], images.pooler_output)

    text = processor.encode_alignment_text(["a red cat", "a dog on the grass"])
    features = model.get_text_features(text["text_input_ids"], text["text_attention_mask"], output_hidden_states=True)
    hidden = features.last_hidden_state
    assert hidden.shape[:2] == text["text_input_ids"].shape
    torch.testing.assert_close(features.pooler_output, hidden[:, 0] @ model.text_proj.weight.T + model.text_proj.bias)
    assert len(features.hidden_states) == model.config.text_config.num_hidden_layers + 1
    with pytest.raises(TypeError, match="unexpected argument"):
        model.get_text_features(text["text_input_ids"], no_such_argument=1)


def test_prepare_inputs_for_generation_passes_every_model_kwarg(model):
    ids = torch.tensor([[5, 6, 7]])
    states = torch.zeros(1, 4, model.config.text_config.hidden_size)
    inputs = model.prepare_inputs_for_generation(ids, attention_mask=torch.ones_like(ids),
                                                 encoder_hidden_states=states, use_cache=False,
                                                 output_attentions=True, tag_labels="kept")
    assert inputs["encoder_hidden_states"] is states and inputs["output_attentions"] is True
    assert inputs["tag_labels"] == "kept" and inputs["use_cache"] is False
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    # How generate tells the step's new tokens: next_sequence_length (newer releases) or cache_position (5.0).
    taken = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    step = {"next_sequence_length": 1} if "next_sequence_length" in taken else {"cache_position": torch.tensor([2])}
    under_old_name = model.prepare_inputs_for_generation(ids, past_key_values=cache, **step)
    assert under_old_name["cache"] is cache and under_old_name["input_ids"].tolist() == [[7]]


def test_generation_from_image_embeds_or_encoder_states(model, pixel_values):
    from_pixels = model.generate(pixel_values, **GREEDY)
    side = model.tag_and_encode(pixel_values)
    assert torch.equal(model.generate(image_embeds=side["image_embeds"], **GREEDY), from_pixels)
    assert torch.equal(model.generate(encoder_hidden_states=side["encoder_hidden_states"], **GREEDY), from_pixels)
    with pytest.raises(ValueError, match="pixel_values, image_embeds or encoder_hidden_states"):
        model.generate(**GREEDY)


def test_assisted_generation_matches_greedy(model, pixel_values):
    if not assisted_generation_supported():  # transformers 5.0: one line naming the release
        with pytest.raises(ValueError, match=r"assisted generation \(assistant_model\) does not run on transformers"):
            model.generate(pixel_values[:1], num_beams=1, max_new_tokens=6, assistant_model=model)
        return
    greedy = model.generate(pixel_values[:1], num_beams=1, max_new_tokens=6)
    assisted = model.generate(pixel_values[:1], num_beams=1, max_new_tokens=6, assistant_model=model)
    assert torch.equal(assisted, greedy)


def test_padding_after_eos_follows_the_call(model, pixel_values):
    free = model.generate(pixel_values, num_beams=1, max_new_tokens=8, min_new_tokens=0)
    generated = free[:, 4:]
    # an eos of the call's choosing: the first token generated for image 0, which then ends its caption
    eos = int(generated[0, 0])
    pad = model.config.text_config.pad_token_id
    ended = model.generate(pixel_values, num_beams=1, max_new_tokens=8, min_new_tokens=0, eos_token_id=eos)
    assert ended[0, 4] == eos and (ended[0, 5:] == pad).all()
    # no eos at all: generation runs to the limit and nothing is padded
    endless = model.generate(pixel_values, num_beams=1, max_new_tokens=8, min_new_tokens=0, eos_token_id=None)
    assert endless.shape == (3, 12)
    assert (endless[:, 4:] != pad).all()


def test_resize_keeps_a_trained_untied_head(tokenizer):
    config = tiny_factory.make_config(tokenizer, tie_word_embeddings=False)
    model = tiny_factory.make_model(config)
    head = model.get_output_embeddings()
    with torch.no_grad():
        head.weight.add_(1.0)  # "trained": different from the input embeddings and from any initialisation
    old_head = head.weight.detach().clone()
    old_bias = model.text_decoder.cls.predictions.bias.detach().clone()
    old_size = old_head.shape[0]
    model.resize_token_embeddings(old_size + 5)
    new_head = model.get_output_embeddings().weight
    assert new_head.shape[0] == old_size + 5
    torch.testing.assert_close(new_head[:old_size], old_head)
    assert new_head.data_ptr() != model.text_decoder.bert.embeddings.word_embeddings.weight.data_ptr()
    torch.testing.assert_close(model.text_decoder.cls.predictions.bias[:old_size], old_bias)
    assert model.config.text_config.vocab_size == model.config.get_text_config().vocab_size == old_size + 5
    assert model.text_encoder.embeddings.word_embeddings.weight.shape[0] == old_size + 5
    ids = torch.tensor([[config.text_config.bos_token_id, old_size + 4]])
    logits = model(pixel_values=torch.zeros(1, 3, 32, 32), input_ids=ids).logits
    assert logits.shape == (1, 2, old_size + 5)
    model.resize_token_embeddings(old_size + 5, pad_to_multiple_of=8)
    assert model.config.text_config.vocab_size % 8 == 0


def test_resize_keeps_a_tied_head_tied(model):
    size = model.config.text_config.vocab_size
    model.resize_token_embeddings(size + 3)
    head = model.get_output_embeddings().weight
    assert head.shape[0] == size + 3
    assert head.data_ptr() == model.text_decoder.bert.embeddings.word_embeddings.weight.data_ptr()


def test_sub_configs_load_from_a_saved_directory(tmp_path, config):
    config.save_pretrained(tmp_path)
    assert Tag2TextConfig.sub_configs["vision_config"].__name__ == "AutoConfig"
    vision = SwinConfig.from_pretrained(tmp_path)
    assert type(vision) is SwinConfig and vision.to_dict() == config.vision_config.to_dict()
    text = Tag2TextTextConfig.from_pretrained(tmp_path)
    assert text.hidden_size == config.text_config.hidden_size and text.enc_token_id == config.text_config.enc_token_id
    tagging = Tag2TextTaggingConfig.from_pretrained(tmp_path)
    assert tagging.num_attention_heads == config.tagging_config.num_attention_heads


@pytest.mark.xfail(TRANSFORMERS_VERSION[:2] == (5, 0), strict=True,
                   reason="transformers 5.0's disk offload misses the tied decoder weight in its index (KeyError "
                          "'text_decoder.cls.predictions.decoder.weight'); releases between 5.0 and 5.24 not tried")
def test_disk_offload_through_device_map(tmp_path, model, pixel_values):
    """The tagging head and the decoder live on disk (accelerate's hooks load them per forward); tags and
    captions are those of the model in memory."""
    model.save_pretrained(tmp_path / "model")
    device_map = {"vision_model": "cpu", "text_encoder": "cpu", "tagging_head": "disk", "vision_proj": "cpu",
                  "text_proj": "cpu", "itm_head": "cpu", "alignment": "cpu", "text_decoder": "disk"}
    offloaded = Tag2TextForCaptioning.from_pretrained(tmp_path / "model", device_map=device_map,
                                                      offload_folder=tmp_path / "offload").eval()
    assert offloaded.tagging_head.label_embed.weight.device.type == "meta"
    with torch.no_grad():
        expected = model.get_tag_logits(model.get_image_embeddings(pixel_values))
        got = offloaded.get_tag_logits(offloaded.get_image_embeddings(pixel_values))
    torch.testing.assert_close(got, expected)
    assert torch.equal(offloaded.generate(pixel_values, **GREEDY), model.generate(pixel_values, **GREEDY))


def test_forward_cache_under_both_names(model, pixel_values):
    side = model.tag_and_encode(pixel_values)
    states = side["encoder_hidden_states"]
    prompt = model._prompt_input_ids(3, "cpu")
    full = model(input_ids=prompt, encoder_hidden_states=states).logits
    first = model(input_ids=prompt[:, :3], encoder_hidden_states=states, use_cache=True)
    assert isinstance(first.cache, EncoderDecoderCache) and first.cache.get_seq_length() == 3
    step = model(input_ids=prompt[:, 3:], encoder_hidden_states=states, past_key_values=first.cache).logits
    torch.testing.assert_close(step[:, -1], full[:, -1], rtol=1e-4, atol=1e-5)


def test_generation_defaults_are_defined_once(model):
    from tag2text.configuration_tag2text import generation_defaults

    defaults = generation_defaults(model.config)
    assert {name: getattr(model.generation_config, name) for name in defaults} == defaults
    text = model.config.text_config
    assert (defaults["eos_token_id"], defaults["pad_token_id"]) == (text.sep_token_id, text.pad_token_id)


def test_released_constants_are_defined_once():
    import tag2text.configuration_tag2text as configuration
    import tag2text.hub.original_config as original

    assert original.RELEASED_THRESHOLD is configuration.RELEASED_TAG_THRESHOLD
    assert original.RELEASED_CLASS_THRESHOLDS is configuration.RELEASED_TAG_THRESHOLDS
    assert original.RELEASED_DELETE_TAG_INDEX is configuration.RELEASED_CAPTION_EXCLUDED_TAG_IDS
    assert original.RELEASED_NUM_TAGS is configuration.RELEASED_NUM_TAGS
    source = open(original.__file__, encoding="utf-8").read()
    assert "RELEASED_THRESHOLD = " not in source and "RELEASED_NUM_TAGS = " not in source


# What the modeling files may import (the Hub payload's rule) is checked by tests/test_layering.py.


def test_one_text_conventions_module_serves_both_payloads():
    """The processor files sit beside the model files (one payload folder), so both import the one
    text_conventions module; no copy or link of it lives in processing/."""
    import tag2text
    import tag2text.processing
    import tag2text.processing_tag2text as processor_module
    import tag2text.text_conventions as conventions

    processing_folder = os.path.dirname(tag2text.processing.__file__)
    assert not os.path.lexists(os.path.join(processing_folder, "text_conventions.py"))
    assert processor_module.caption_text is conventions.caption_text  # a name the processor uses
    assert tag2text.processing.Tag2TextProcessor is processor_module.Tag2TextProcessor
    assert conventions.tag_text(["cat", " ", "fire hydrant"]) == "cat | fire hydrant"
    assert conventions.split_tag_text("cat | fire hydrant |") == ["cat", "fire hydrant"]


def test_base_model_output_leads_with_the_visual_tokens(config, pixel_values):
    base = tiny_factory.make_model(config, cls=Tag2TextModel)
    with torch.no_grad():
        out = base(pixel_values)
        tower = base.vision_model(pixel_values=pixel_values)  # independent: the Swin tower on its own
    expected = torch.cat([tower.pooler_output[:, None], tower.last_hidden_state], dim=1)
    torch.testing.assert_close(out.last_hidden_state, expected)
    torch.testing.assert_close(out.pooler_output, tower.pooler_output)
    assert out[0] is out.last_hidden_state  # what feature extraction reads
    # the fields callers used keep their values
    assert out.image_embeds is out.last_hidden_state
    torch.testing.assert_close(out.tag_logits, base.get_tag_logits(expected))
    labels = torch.zeros_like(out.tag_logits)
    with torch.no_grad():
        with_loss = base(pixel_values, tag_labels=labels, return_dict=False)
    assert with_loss[0].dim() == 0 and torch.equal(with_loss[1], out.last_hidden_state)


def test_image_feature_extraction_pipeline_runs_the_base_model(tmp_path, config, processor):
    from transformers import pipeline

    base = tiny_factory.make_model(config, cls=Tag2TextModel)
    image = tiny_factory.draw_image(7)
    with torch.no_grad():
        tower = base.vision_model(pixel_values=processor(images=image)["pixel_values"])
    expected = torch.cat([tower.pooler_output[:, None], tower.last_hidden_state], dim=1)
    extractor = pipeline("image-feature-extraction", model=base, image_processor=processor.image_processor)
    features = extractor(image, return_tensors=True)
    torch.testing.assert_close(features, expected)
    pooled = extractor(image, pool=True)
    assert isinstance(pooled, list) and len(pooled) == 1 and len(pooled[0]) == config.vision_hidden_size
    torch.testing.assert_close(torch.tensor(pooled), tower.pooler_output)
    # from a saved directory, through AutoModel and the saved image processor
    base.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    from_directory = pipeline("image-feature-extraction", model=str(tmp_path))
    assert type(from_directory.model) is Tag2TextModel
    torch.testing.assert_close(from_directory(image, return_tensors=True), expected)


def test_masks_and_token_ids_that_do_not_fit_are_refused(model, pixel_values):
    with pytest.raises(ValueError, match="input_ids were not given and the default prompt .* has 4 tokens"):
        model(pixel_values, attention_mask=torch.ones(3, 10, dtype=torch.long))
    ids = torch.full((3, 5), model.config.text_config.bos_token_id)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(3, 6\) but the input needs \(3, 5\)"):
        model(pixel_values, input_ids=ids, attention_mask=torch.ones(3, 6, dtype=torch.long))
    vocab = model.config.text_config.vocab_size
    ids[0, 2] = vocab
    with pytest.raises(ValueError, match=f"token id {vocab} is outside the vocabulary of {vocab}"):
        model(pixel_values, input_ids=ids)


def test_input_require_grads_carry_gradients_through_frozen_embeddings(model, processor):
    """The adapter case: everything frozen but a few layer weights, re-entrant gradient checkpointing. Without the
    hooks no checkpointed block gets an input that needs gradients and the loss has none; with them every
    trainable weight gets the gradient it gets without checkpointing."""
    batch = processor(images=[tiny_factory.draw_image(s) for s in range(2)], text=["a red cat", "a dog"])
    trainable = [f"vision_model.encoder.layers.0.blocks.0.{swin_block_parameter_names()['query']}.weight",
                 "text_encoder.encoder.layer.0.attention.self.query.weight",
                 "text_decoder.bert.encoder.layer.0.attention.self.query.weight"]
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    model.train()
    parameters = dict(model.named_parameters())

    def loss():
        torch.manual_seed(0)
        return model(**batch, labels=batch["input_ids"], tag_targets=torch.zeros(2, model.config.num_tags)).loss

    loss().backward()
    reference = [parameters[name].grad.clone() for name in trainable]
    model.zero_grad(set_to_none=True)
    enable_activation_checkpointing(model, use_reentrant=True)
    assert not loss().requires_grad
    model.enable_input_require_grads()
    loss().backward()
    for name, expected in zip(trainable, reference):
        assert expected.abs().sum() > 0
        torch.testing.assert_close(parameters[name].grad, expected)
    model.disable_input_require_grads()
    assert not loss().requires_grad


def test_resized_head_survives_post_init(tokenizer, caplog):
    config = tiny_factory.make_config(tokenizer, tie_word_embeddings=False)
    model = tiny_factory.make_model(config)
    size = config.text_config.vocab_size
    model.resize_token_embeddings(size + 4)
    head = model.get_output_embeddings().weight.detach().clone()
    bias = model.text_decoder.cls.predictions.bias.detach().clone()
    model.post_init()  # transformers initialises whatever is not marked as initialised
    assert torch.equal(model.get_output_embeddings().weight, head)
    assert torch.equal(model.text_decoder.cls.predictions.bias, bias)
    assert model.vocab_size == model.config.text_config.vocab_size == size + 4
    # [DEC] and [ENC] are the last rows: shrinking past them is allowed (a new tokenizer's ids may follow) but said
    with caplog.at_level("WARNING", logger="tag2text.modeling_tag2text"):
        model.resize_token_embeddings(size - 2)
    assert f"bos_token_id={config.text_config.bos_token_id}" in caplog.text
    assert f"enc_token_id={config.text_config.enc_token_id}" in caplog.text


def test_hidden_states_by_layer_index(model, processor):
    batch = processor(images=[tiny_factory.draw_image(s) for s in range(2)], text=["a red cat", "a dog"])
    with torch.no_grad():
        full = model(**batch, output_hidden_states=True).hidden_states
        chosen = model(**batch, output_hidden_states=[0, -1]).hidden_states
    assert len(chosen) == len(full) == model.config.text_config.num_hidden_layers + 1
    assert torch.equal(chosen[0], full[0]) and torch.equal(chosen[-1], full[-1])
    assert all(state is None for state in chosen[1:-1])


def test_config_json_states_the_number_of_tags(config):
    import json

    written = json.loads(config.to_json_string())
    assert written["num_tags"] == len(written["tag_names"]) == config.num_tags
    assert Tag2TextConfig.from_dict(written).num_tags == config.num_tags
    written["num_tags"] += 1
    with pytest.raises(ValueError, match="does not match len\\(tag_names\\)"):
        Tag2TextConfig.from_dict(written)
