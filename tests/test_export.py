"""torch.export and torch.compile of the tagging path and of a decoder step, with a dynamic batch.

The exported and compiled programs are traced (fake tensors, no packed weights, no micro-batches, no
data-dependent checks); the eager references take every CPU inference shortcut. Equal outputs show both.
"""

import pytest
import torch
from torch import nn

import tiny_factory
from transformers.cache_utils import DynamicCache, EncoderDecoderCache


class TaggingPath(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        image_embeds = self.model.get_image_embeddings(pixel_values)
        return self.model.get_tag_logits(image_embeds), image_embeds


class DecoderStep(nn.Module):
    """One cached decoding step: new token ids, the encoded tags and the self-attention keys/values so far ->
    logits and the keys/values with this step appended."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, input_ids, encoder_hidden_states, past_keys, past_values):
        layers = [(past_keys[i], past_values[i]) for i in range(past_keys.shape[0])]
        cache = EncoderDecoderCache(DynamicCache(ddp_cache_data=layers), DynamicCache())
        past = past_keys.shape[3]
        mask = torch.ones(input_ids.shape[0], past + input_ids.shape[1], dtype=torch.long, device=input_ids.device)
        logits = self.decoder(input_ids, mask, encoder_hidden_states, cache=cache)[0]
        self_cache = cache.self_attention_cache
        keys = torch.stack([layer.keys for layer in self_cache.layers])
        values = torch.stack([layer.values for layer in self_cache.layers])
        return logits, keys, values


def _images(batch, seed):
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _eager_tagging(model, pixel_values):
    with torch.no_grad():  # CPU inference: packed weights, one image at a time
        return TaggingPath(model)(pixel_values)


def test_export_tagging_path_with_dynamic_batch(model):
    batch = torch.export.Dim("batch", min=1, max=16)
    program = torch.export.export(TaggingPath(model), (_images(2, 0),), dynamic_shapes={"pixel_values": {0: batch}})
    exported = program.module()
    for size, seed in ((3, 1), (5, 2)):
        pixel_values = _images(size, seed)
        logits, embeds = exported(pixel_values)
        want_logits, want_embeds = _eager_tagging(model, pixel_values)
        assert logits.shape == (size, model.config.num_tags)
        torch.testing.assert_close(logits, want_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(embeds, want_embeds, atol=1e-5, rtol=1e-5)


def _past(model, batch, past_length, seed):
    """A filled decoder cache from an eager prefill, as stacked (layers, batch, heads, past, head dim) tensors."""
    text = model.config.text_config
    generator = torch.Generator().manual_seed(seed)
    encoder_states = torch.randn(batch, 6, text.hidden_size, generator=generator)
    prompt = torch.randint(5, text.vocab_size, (batch, past_length), generator=generator)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    with torch.no_grad():
        model.text_decoder(prompt, None, encoder_states, cache=cache)
    layers = cache.self_attention_cache.layers
    keys = torch.stack([layer.keys for layer in layers])
    values = torch.stack([layer.values for layer in layers])
    next_ids = torch.randint(5, text.vocab_size, (batch, 1), generator=generator)
    return next_ids, encoder_states, keys, values, prompt


def test_export_decoder_step_with_dynamic_batch_and_past_length(model):
    batch, past = torch.export.Dim("batch", min=1, max=32), torch.export.Dim("past", min=1, max=48)
    example = _past(model, 2, 4, seed=0)[:4]
    program = torch.export.export(
        DecoderStep(model.text_decoder),
        example,
        dynamic_shapes={
            "input_ids": {0: batch},
            "encoder_hidden_states": {0: batch},
            "past_keys": {1: batch, 3: past},
            "past_values": {1: batch, 3: past},
        },
    )
    exported = program.module()
    for size, past_length, seed in ((3, 5, 1), (6, 2, 2)):
        next_ids, encoder_states, keys, values, prompt = _past(model, size, past_length, seed)
        logits, new_keys, new_values = exported(next_ids, encoder_states, keys, values)
        # eager reference: the same step through the model's own cache objects
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        with torch.no_grad():
            model.text_decoder(prompt, None, encoder_states, cache=cache)
            want = model.text_decoder(next_ids, None, encoder_states, cache=cache)[0]
        assert logits.shape == (size, 1, model.config.text_config.vocab_size)
        torch.testing.assert_close(logits, want, atol=1e-5, rtol=1e-5)
        want_layers = cache.self_attention_cache.layers
        assert new_keys.shape[3] == past_length + 1
        torch.testing.assert_close(new_keys, torch.stack([layer.keys for layer in want_layers]), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(new_values, torch.stack([layer.values for layer in want_layers]),
                                   atol=1e-5, rtol=1e-5)


def test_compiled_forward_equals_eager(model, processor, pixel_values):
    """torch.compile of the captioning forward (teacher forcing with given tags); aot_eager runs the same
    dynamo and AOTAutograd tracing as inductor without its C++ compile (see benchmarks/inference.py --compile)."""
    inputs = processor(
        images=[tiny_factory.draw_image(seed) for seed in range(2)],
        text=["a dog on the grass", "a red car"],
        tags=[["dog", "grass"], ["car", "red"]],
    )
    kwargs = {k: v for k, v in inputs.items() if k in ("pixel_values", "input_ids", "attention_mask",
                                                       "tag_input_ids", "tag_attention_mask")}
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad():
        want = model(**kwargs)
        got = compiled(**kwargs)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.tag_logits, want.tag_logits, atol=1e-5, rtol=1e-5)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
