"""Padding masks mean the same under eager and SDPA attention.

The text layers build one additive mask, the original's ``(1 - mask) * -10000`` (not ``finfo.min``), and hand it to
either attention function. Checked here against an attention written out by hand, and by the property a padding
mask exists for: what sits under masked positions does not reach the real ones.
"""

import copy

import pytest
import torch

import tiny_factory
from tag2text import modeling_tag2text_text as text_modules


def _with_attention(model, implementation):
    twin = copy.deepcopy(model)
    twin.set_attn_implementation(implementation)
    layers = [m for m in twin.modules() if isinstance(m, text_modules.Tag2TextAttentionProjections)]
    assert layers and all(m.config._attn_implementation == implementation for m in layers)
    return twin.eval()


@pytest.fixture
def twins(model):
    return {name: _with_attention(model, name) for name in ("eager", "sdpa")}


def _reference_attention(module, hidden, keep, causal):
    """softmax(q k^T / sqrt(d) + bias) v in float64 from the module's own weights; bias is -10000 wherever a key is
    padding (or, causal, in the future), written out here rather than taken from the model."""
    batch, length, width = hidden.shape
    heads = module.num_attention_heads
    x = hidden.double()

    def project(linear):
        y = x @ linear.weight.double().T + linear.bias.double()
        return y.view(batch, length, heads, width // heads).transpose(1, 2)

    q, k, v = project(module.query), project(module.key), project(module.value)
    allowed = keep[:, None, None, :].bool().expand(batch, 1, length, length)
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool).tril()
    bias = torch.where(allowed, 0.0, -10000.0).double()
    probs = torch.softmax(q @ k.transpose(-1, -2) / (width // heads) ** 0.5 + bias, dim=-1)
    return (probs @ v).transpose(1, 2).reshape(batch, length, width), bias


@pytest.mark.parametrize("causal", [True, False], ids=["decoder", "interaction-encoder"])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attention_equals_a_hand_written_softmax_with_the_original_mask(twins, implementation, causal):
    model = twins[implementation]
    stack = model.text_decoder.bert if causal else model.text_encoder
    module = stack.encoder.layer[0].attention.self
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(3, 6, model.config.text_config.hidden_size, generator=generator)
    keep = torch.ones(3, 6, dtype=torch.long)
    keep[1, :2] = 0  # left padding: with the causal mask, its first two query rows see no key at all
    keep[2, -3:] = 0  # right padding
    expected, bias = _reference_attention(module, hidden, keep, causal)
    mask = text_modules.extended_self_attention_mask(keep, 6, causal, torch.float32)
    assert torch.equal(mask.double().expand_as(bias), bias)  # the -10000 fill, as the original builds it
    with torch.no_grad():
        output, _ = module(hidden, mask)
    assert torch.isfinite(output).all()
    blind = (bias == 0).sum(-1).squeeze(1) == 0  # (batch, query) rows that see no key
    assert blind.sum() == (2 if causal else 0)
    torch.testing.assert_close(output.double()[~blind], expected[~blind], atol=2e-5, rtol=1e-4)
    # A row that sees no key gets the softmax of its raw scores over every key, as in the original. In float32,
    # score - 10000 keeps the score only to ulp(10000) / 2 = 2^-11, so these rows agree to about 1e-3, not better.
    torch.testing.assert_close(output.double()[blind], expected[blind], atol=2e-3, rtol=0)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_left_padded_prompts_decode_as_unpadded_ones(twins, pixel_values, implementation):
    """Generation's case: left padding with position ids counted from the first real token."""
    model = twins[implementation]
    bos = model.config.text_config.bos_token_id
    # row 1: two arbitrary tokens under the mask, then a prompt; they must not matter
    ids = torch.tensor([[bos, 4, 5, 6, 7, 25, 8], [22, 23, bos, 4, 5, 6, 7]])
    mask = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1]])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        states = model.tag_and_encode(pixel_values[:2])["encoder_hidden_states"]
        padded = model.decode_text(ids, states, mask, positions)[1]
        alone = model.decode_text(ids[1:, 2:], states[1:])[1]
        first_alone = model.decode_text(ids[:1], states[:1])[1]
    torch.testing.assert_close(padded[1, 2:], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(padded[0], first_alone[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_right_padded_tag_text_encodes_as_unpadded(twins, pixel_values, processor, implementation):
    """The interaction encoder attends both ways, so only the mask keeps padding out of the real positions."""
    model = twins[implementation]
    tags = processor.encode_tags([["cat", "dog", "sky"], ["cat"]])
    ids, mask = tags["tag_input_ids"].clone(), tags["tag_attention_mask"]
    assert (mask[1] == 0).any()
    ids[1][mask[1] == 0] = 27  # a real word under the mask instead of [PAD]
    real = int(mask[1].sum())
    with torch.no_grad():
        embeds = model.get_image_embeddings(pixel_values[:2])
        padded = model.encode_tags(ids, mask, embeds)[0]
        alone = model.encode_tags(ids[1:, :real], mask[1:, :real], embeds[1:])[0]
    torch.testing.assert_close(padded[1, :real], alone[0], atol=1e-5, rtol=1e-4)


def test_eager_and_sdpa_agree_everywhere_with_padding(twins, pixel_values, processor):
    """Same float32 numbers from both, padded positions included (they see the same additive mask)."""
    batch = processor(images=[tiny_factory.draw_image(s) for s in range(3)],
                      text=["a red cat on the grass", "a dog", "two men riding a bike"])
    tags = processor.encode_tags([["cat", "grass"], ["dog"], ["man", "bike", "riding"]])
    assert (batch["attention_mask"] == 0).any() and (tags["tag_attention_mask"] == 0).any()
    with torch.no_grad():
        outputs = {name: model(**batch, **tags, output_hidden_states=True) for name, model in twins.items()}
    eager, sdpa = outputs["eager"], outputs["sdpa"]
    torch.testing.assert_close(sdpa.logits, eager.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(sdpa.text_encoder_last_hidden_state, eager.text_encoder_last_hidden_state,
                               atol=1e-5, rtol=1e-4)
    for a, b in zip(sdpa.hidden_states, eager.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(sdpa.tag_logits, eager.tag_logits, atol=1e-5, rtol=1e-4)
