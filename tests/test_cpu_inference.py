"""CPU inference shortcuts: opt-in packed linear weights owned by each module (tag2text.cpu_packing),
micro-batches, feed-forward chunks.

References are computed independently: float64 matrix products, transformers' own SwinModel, and the same
modules with the packed path switched off (plain ``nn.functional.linear``).
"""

import copy
import math
import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn

import tiny_factory
from tag2text import cpu_packing
from tag2text import modeling_tag2text_text as text_module
from tag2text.cpu_packing import PackedLinear, pack_cpu_weights, unpack_cpu_weights


def _exact(layer, x):  # float64, independent of every CPU fast path
    weight, bias = layer.weight.detach().double(), layer.bias.detach().double()
    return (x.double() @ weight.t() + bias).to(x.dtype)


def _linears(module):
    return [m for m in module.modules() if isinstance(m, PackedLinear)]


def _without_packing(module):
    for linear in _linears(module):
        linear.cpu_weight_packing = False
    return module


def test_packed_copy_belongs_to_the_module_and_equals_a_plain_linear():
    torch.manual_seed(0)
    layer = PackedLinear(48, 80).eval()
    few, many = torch.randn(3, 1, 48), torch.randn(2, 40, 48)
    with torch.no_grad():
        for x in (few, many):
            torch.testing.assert_close(layer(x), _exact(layer, x), rtol=1e-5, atol=1e-5)
    assert layer._packed is not None  # the packed path was taken, and its copy is the module's own
    assert list(layer.state_dict()) == ["weight", "bias"]
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert clone._packed is None  # never copied along
        with torch.no_grad():
            torch.testing.assert_close(clone(few), layer(few), rtol=0, atol=0)
    layer.train()
    assert layer._packed is None  # train() drops it


def _change_weights(layer, how, few):
    if how == "fused AdamW step":
        optimizer = torch.optim.AdamW(layer.parameters(), lr=0.5, fused=True)
        layer(few).sum().backward()  # eval mode, gradients on: the plain path
        version = layer.weight._version
        optimizer.step()
        assert layer.weight._version == version  # a change the version counter does not see
    elif how == ".data.copy_()":
        version = layer.weight._version
        layer.weight.data.copy_(torch.randn(80, 48))
        assert layer.weight._version == version
    elif how == "one element through .data":
        layer.weight.data[7, 11] += 0.25
    elif how == "no_grad add_":
        with torch.no_grad():
            layer.weight.add_(1.0)
    elif how == "load_state_dict":
        layer.load_state_dict(PackedLinear(48, 80).state_dict())
    elif how == "to(bfloat16)":
        layer.to(torch.bfloat16)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    ["fused AdamW step", ".data.copy_()", "one element through .data", "no_grad add_", "load_state_dict",
     "to(bfloat16)"],
)
def test_outputs_follow_every_kind_of_weight_change(how):
    torch.manual_seed(0)
    layer = PackedLinear(48, 80).eval()  # stays in eval mode throughout: no train() to drop the copy
    few = torch.randn(3, 1, 48)
    with torch.no_grad():
        before = layer(few)
    assert layer._packed is not None
    _change_weights(layer, how, few)
    x = few.to(layer.weight.dtype)
    with torch.no_grad():
        after = layer(x)
    tolerance = 1e-2 if x.dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(after.float(), _exact(layer, x).float(), rtol=tolerance, atol=tolerance)
    assert (after.float() - before).abs().max() > 1e-3  # the weights really changed


def test_packed_path_only_in_eval_without_grad_on_plain_cpu_tensors():
    torch.manual_seed(0)
    layer = PackedLinear(48, 80)
    x = torch.randn(4, 48)
    with torch.no_grad():  # train mode (dropout etc. active): nn.Linear
        assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
    assert layer._packed is None
    layer.eval()
    out = layer(x)  # gradients on: nn.Linear, differentiable
    assert out.requires_grad and layer._packed is None
    layer.cpu_weight_packing = False
    with torch.no_grad():
        assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
    assert layer._packed is None
    layer.cpu_weight_packing = True
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # packed in the compute dtype
        got = layer(x)
        want = nn.functional.linear(x, layer.weight, layer.bias)
    assert got.dtype == want.dtype == torch.bfloat16 and layer._packed is not None
    torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)


def test_importing_the_package_registers_no_optimizer_hook():
    code = (
        "import torch.optim.optimizer as o; before = (len(o._global_optimizer_pre_hooks), "
        "len(o._global_optimizer_post_hooks)); import tag2text, tag2text.modeling_tag2text_text; "
        "from tag2text import Tag2TextForCaptioning; "
        "print(before == (len(o._global_optimizer_pre_hooks), len(o._global_optimizer_post_hooks)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"
    assert not hasattr(cpu_packing, "clear_packed_weights") and not hasattr(cpu_packing, "_PACKED_WEIGHTS")


def test_decoder_checks_packed_weights_once_per_generation_and_follows_changes(model, pixel_values, monkeypatch):
    """Later steps of one generation (same cache) trust the first step's check; a new generation checks again,
    so weights changed between generations through .data are followed."""
    checks = []
    fingerprint = cpu_packing._weight_fingerprint
    monkeypatch.setattr(cpu_packing, "_weight_fingerprint", lambda weight: checks.append(1) or fingerprint(weight))
    decoder = pack_cpu_weights(model).text_decoder
    reference = _without_packing(copy.deepcopy(decoder))  # the same weights, nn.Linear's path
    with torch.no_grad():
        encoder_states = torch.randn(2, 5, model.config.text_config.hidden_size)
        ids = torch.tensor([[model.config.text_config.bos_token_id, 7, 8]] * 2)

        def run(module):
            from transformers.cache_utils import DynamicCache, EncoderDecoderCache

            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            first = module(ids, encoder_hidden_states=encoder_states, cache=cache)[0]
            checks.clear()
            later = [module(ids[:, -1:] + step, encoder_hidden_states=encoder_states, cache=cache)[0]
                     for step in range(3)]
            return [first] + later

        fast = run(decoder)
        assert checks == []  # steps 2-4 of the generation read no weight
        for got, want in zip(fast, run(reference)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert all(linear._trust_token is None for linear in _linears(decoder))  # trust ends with each call

        for module in (decoder, reference):
            module.cls.predictions.transform.dense.weight.data.mul_(-1.5)
            module.bert.encoder.layer[0].intermediate.dense.weight.data.mul_(2.0)
        for got, want in zip(run(decoder), run(reference)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _float64_tag_logits(model, image_embeds):
    """The Query2Label head in float64 with nn.functional.linear on the parameters."""
    heads = model.config.tagging_config.num_attention_heads
    embeds = image_embeds.double()
    hidden = model.tagging_head.label_embed.weight.double().unsqueeze(0).expand(embeds.shape[0], -1, -1)

    def linear(module, x):
        return nn.functional.linear(x, module.weight.double(), module.bias.double())

    def norm(module, x):
        return nn.functional.layer_norm(x, x.shape[-1:], module.weight.double(), module.bias.double(), module.eps)

    def split(x):
        b, n, w = x.shape
        return x.view(b, n, heads, w // heads).transpose(1, 2)

    for layer in model.text_encoder.encoder.layer[: model.config.tagging_config.num_hidden_layers]:
        attn = layer.crossattention.self
        q, k, v = split(linear(attn.query, hidden)), split(linear(attn.key, embeds)), split(linear(attn.value, embeds))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        context = (probs @ v).transpose(1, 2).reshape(hidden.shape)
        out = layer.crossattention.output
        hidden = norm(out.LayerNorm, linear(out.dense, context) + hidden)
        ffn = nn.functional.gelu(linear(layer.intermediate.dense, hidden))
        hidden = norm(layer.output.LayerNorm, linear(layer.output.dense, ffn) + hidden)
    head = model.tagging_head
    return ((hidden * head.classifier_weight.double()).sum(-1) + head.classifier_bias.double()).float()


def _record_ffn_rows(model):
    rows = []
    for layer in model.text_encoder.encoder.layer:
        layer.intermediate.register_forward_pre_hook(lambda module, args: rows.append(tuple(args[0].shape[:2])))
    return rows


def test_feed_forward_chunks_follow_the_config(tokenizer, pixel_values, monkeypatch):
    """chunk_size_feed_forward=None (default): CPU_INFERENCE_CHUNK_SIZE_FEED_FORWARD positions at a time in CPU
    inference only; an int: that many in every mode (0: none), as transformers' setting."""
    monkeypatch.setattr(text_module, "CPU_INFERENCE_CHUNK_SIZE_FEED_FORWARD", 5)  # 16 tag queries: 5, 5, 5, 1
    model = tiny_factory.make_model(tiny_factory.make_config(tokenizer))
    model.cpu_inference_images_per_chunk = 1  # the released model's micro-batch
    assert model.config.text_config.chunk_size_feed_forward is None
    rows = _record_ffn_rows(model)
    with torch.no_grad():
        embeds = model.get_image_embeddings(pixel_values)
        logits = model.get_tag_logits(embeds)
    assert rows == [(1, 5), (1, 5), (1, 5), (1, 1)] * 2 * 3  # 2 tagging layers, 3 images one at a time
    torch.testing.assert_close(logits, _float64_tag_logits(model, embeds), atol=1e-5, rtol=1e-5)
    rows.clear()
    logits_grad = model.get_tag_logits(embeds)  # gradients on: whole batch, whole blocks
    assert rows == [(3, 16)] * 2
    torch.testing.assert_close(logits_grad.detach(), logits, atol=1e-5, rtol=1e-5)

    model.config.text_config.chunk_size_feed_forward = 6  # explicit: in every mode, gradients on included
    rows.clear()
    logits_grad = model.get_tag_logits(embeds)
    assert rows == [(3, 6), (3, 6), (3, 4)] * 2
    torch.testing.assert_close(logits_grad.detach(), logits, atol=1e-5, rtol=1e-5)
    model.config.text_config.chunk_size_feed_forward = 0  # never
    rows.clear()
    with torch.no_grad():
        model.get_tag_logits(embeds)
    assert rows == [(1, 16)] * 2 * 3


def test_chunk_size_feed_forward_is_validated_and_saved(tmp_path, tokenizer):
    from tag2text import Tag2TextConfig
    from tag2text.configuration_tag2text import Tag2TextTextConfig

    with pytest.raises(ValueError, match="chunk_size_feed_forward"):
        Tag2TextTextConfig(chunk_size_feed_forward=-1)
    config = tiny_factory.make_config(tokenizer)
    config.text_config.chunk_size_feed_forward = 128
    config.save_pretrained(tmp_path)
    assert Tag2TextConfig.from_pretrained(tmp_path).text_config.chunk_size_feed_forward == 128


def test_micro_batches_only_in_cpu_inference(model, pixel_values, monkeypatch):
    """The vision tower and the tagging head run one image at a time in CPU inference (eval, no grad) when the
    micro-batch is one image (the released model's); the numbers are those of the whole batch."""
    monkeypatch.setattr(model, "cpu_inference_images_per_chunk", 1)
    batches = []
    model.vision_model.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    with torch.no_grad():
        embeds = model.get_image_embeddings(pixel_values)
    assert batches == [1, 1, 1]
    batches.clear()
    whole = model.get_image_embeddings(pixel_values)  # gradients on
    assert batches == [3]
    torch.testing.assert_close(embeds, whole.detach(), atol=1e-5, rtol=1e-5)
    batches.clear()
    model.train()
    with torch.no_grad():
        model.get_image_embeddings(pixel_values)
    model.eval()
    model.cpu_inference_images_per_chunk = 0  # switched off
    with torch.no_grad():
        model.get_image_embeddings(pixel_values)
    assert batches == [3, 3]


def test_the_default_model_computes_with_nn_linear(model):
    """Packing is opt-in: as built (and as loaded), every linear layer is transformers' or torch's own."""
    assert not _linears(model)
    assert all(type(m) is nn.Linear for m in model.modules() if isinstance(m, nn.Linear))
    assert not any(model_hooks for m in model.modules() for model_hooks in (m._forward_pre_hooks, m._forward_hooks))


def test_packed_vision_tower_keeps_transformers_keys_parameters_and_numbers(model, pixel_values):
    from transformers import SwinModel

    tower = model.vision_model
    plain = SwinModel(model.config.vision_config, add_pooling_layer=True).eval()
    plain.load_state_dict(tower.state_dict())
    parameters = dict(model.named_parameters())
    keys = list(model.state_dict())
    assert pack_cpu_weights(pack_cpu_weights(model)) is model  # a second call changes nothing
    assert type(tower) is SwinModel
    assert not [m for m in tower.modules() if type(m) is nn.Linear]  # each one replaced, none class-swapped
    linears = _linears(tower)
    assert linears and all(type(m) is PackedLinear for m in linears)
    assert list(model.state_dict()) == keys and list(plain.state_dict()) == list(tower.state_dict())
    assert all(parameter is parameters[name] for name, parameter in model.named_parameters())
    assert len(model.text_decoder._forward_pre_hooks) == 1  # one trust hook per packed tree, not two
    with torch.no_grad():
        fast = model.get_image_embeddings(pixel_values)
        out = plain(pixel_values=pixel_values)  # transformers' own tower with nn.Linear
    assert all(m._packed is not None for m in linears)
    assert all(m._trust_token is None for m in _linears(model))  # trust ends with the call
    torch.testing.assert_close(fast, torch.cat([out.pooler_output.unsqueeze(1), out.last_hidden_state], 1),
                               atol=1e-5, rtol=1e-5)

    original = nn.Linear(6, 4)
    shared = PackedLinear.sharing(original)
    assert shared.weight is original.weight and shared.bias is original.bias

    unpack_cpu_weights(model)
    assert not _linears(model) and list(model.state_dict()) == keys
    assert all(parameter is parameters[name] for name, parameter in model.named_parameters())
    assert not model.text_decoder._forward_pre_hooks and not model.text_decoder._forward_hooks


def test_a_packed_model_pickles_and_copies(model, pixel_values):
    pack_cpu_weights(model)
    with torch.no_grad():
        want = model.generate(pixel_values=pixel_values, num_beams=1, max_new_tokens=5)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert len(_linears(clone)) == len(_linears(model))
        with torch.no_grad():
            assert torch.equal(clone.generate(pixel_values=pixel_values, num_beams=1, max_new_tokens=5), want)


def test_captions_equal_with_and_without_packed_weights(model, pixel_values):
    packed = pack_cpu_weights(copy.deepcopy(model))
    with torch.no_grad():
        greedy = packed.generate(pixel_values=pixel_values, num_beams=1, max_new_tokens=8)
        beams = packed.generate(pixel_values=pixel_values, num_beams=3, max_new_tokens=8)
        assert all(linear._packed is not None for linear in _linears(packed.text_decoder))
        assert torch.equal(model.generate(pixel_values=pixel_values, num_beams=1, max_new_tokens=8), greedy)
        assert torch.equal(model.generate(pixel_values=pixel_values, num_beams=3, max_new_tokens=8), beams)
        _without_packing(packed)  # the flag on each layer: nn.Linear's path inside the packed modules
        assert torch.equal(packed.generate(pixel_values=pixel_values, num_beams=3, max_new_tokens=8), beams)


def test_automatic_micro_batch_is_one_released_image_and_a_whole_batch_of_small_ones(model, pixel_values):
    from tag2text import preset_config
    from tag2text.modeling_tag2text import CPU_MICRO_BATCH_BYTES, largest_activation_bytes_per_image

    released = preset_config("tag2text-swin-b-384")
    # Swin-B at 384 px: 96 x 96 stage-1 tokens through a 4 x 128-wide MLP; the tagging head: 3,429 tags through
    # the 3,072-wide feed-forward, the larger of the two.
    assert largest_activation_bytes_per_image(released) == 4 * max(96 * 96 * 512, 3429 * 3072)
    assert CPU_MICRO_BATCH_BYTES // largest_activation_bytes_per_image(released) == 0  # so: one image at a time
    small = preset_config("small")
    assert largest_activation_bytes_per_image(small) == 4 * 16 * 16 * 128  # 64 px / 4 px patches, 32 wide
    assert model.cpu_inference_images_per_chunk == "auto"
    expected = max(1, CPU_MICRO_BATCH_BYTES // largest_activation_bytes_per_image(model.config))
    assert model.cpu_inference_chunk() == expected >= pixel_values.shape[0]
    batches = []
    handle = model.vision_model.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            whole = model.get_image_embeddings(pixel_values)
            model.cpu_inference_images_per_chunk = 1
            singles = model.get_image_embeddings(pixel_values)
    finally:
        model.cpu_inference_images_per_chunk = "auto"
        handle.remove()
    assert batches == [3, 1, 1, 1]
    torch.testing.assert_close(whole, singles, atol=1e-5, rtol=1e-5)


def _activation_of(block):
    return block.activation_fn if hasattr(block, "activation_fn") else block.intermediate_act_fn


def test_an_exact_gelu_after_a_packed_layer_runs_inside_it_and_goes_back(model, pixel_values):
    blocks = [m for m in model.modules() if type(m).__name__ in ("SwinMLP", "SwinIntermediate", "Tag2TextIntermediate")]
    activations = {id(block): _activation_of(block) for block in blocks}
    assert blocks and all(type(a).__name__ == "GELUActivation" for a in activations.values())
    with torch.no_grad():
        plain_embeds = model.get_image_embeddings(pixel_values)
    pack_cpu_weights(model)
    fused = [m for m in _linears(model) if m.activation == "gelu"]
    assert len(fused) == len(blocks)
    assert all(isinstance(_activation_of(block), cpu_packing.GeluInLinear) for block in blocks)
    layer = fused[0]
    x = torch.randn(5, layer.in_features)
    want = torch.nn.functional.gelu(_exact(layer, x).double()).float()  # float64 product, then torch's erf GELU
    with torch.no_grad():
        torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)  # the packed, fused path
        torch.testing.assert_close(model.get_image_embeddings(pixel_values), plain_embeds, atol=1e-5, rtol=1e-5)
    # With gradients (training), the layer is nn.Linear followed by the GELU it took over.
    x.requires_grad_(True)
    layer(x).sum().backward()
    reference = x.detach().clone().requires_grad_(True)
    torch.nn.functional.gelu(torch.nn.functional.linear(reference, layer.weight, layer.bias)).sum().backward()
    torch.testing.assert_close(x.grad, reference.grad)
    unpack_cpu_weights(model)
    assert all(_activation_of(block) is activations[id(block)] for block in blocks)
    assert not _linears(model)


def test_shared_queries_are_projected_once_in_inference_only(model):
    """Queries expanded over the batch (stride 0) go through the query projection once without gradients; with
    gradients the whole batch does, so training sums the weight's gradient as it always did (bit-identical runs)."""
    attention = next(m for m in model.modules()
                     if isinstance(m, text_module.Tag2TextAttentionProjections) and m.is_cross_attention)
    rows = []
    handle = attention.query.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0]))
    queries = torch.randn(1, 7, attention.query.in_features).expand(4, -1, -1)
    with torch.no_grad():
        projected = attention._project_query(queries)
    assert rows == [1] and projected.shape == (4, 7, attention.query.out_features)
    torch.testing.assert_close(projected, _exact(attention.query, queries.contiguous()), atol=1e-5, rtol=1e-5)
    rows.clear()
    attention._project_query(queries)  # gradients on
    handle.remove()
    assert rows == [4]


def test_swin_stages_run_in_micro_batches_with_the_same_numbers(model, pixel_values, monkeypatch):
    """With packed weights each Swin stage runs as many images at a time as keep its MLP activation within
    STAGE_MICRO_BATCH_BYTES, in CPU inference only; the numbers are transformers' own tower's on the whole batch."""
    from transformers import SwinModel
    from transformers.models.swin.modeling_swin import SwinStage

    from tag2text import swin_micro_batches

    monkeypatch.setattr(model, "cpu_inference_images_per_chunk", 0)  # the model hands the tower the whole batch
    tower = model.vision_model
    plain = SwinModel(model.config.vision_config, add_pooling_layer=True).eval()
    plain.load_state_dict(tower.state_dict())
    keys = list(model.state_dict())
    pack_cpu_weights(model)
    stages = [m for m in tower.modules() if isinstance(m, SwinStage)]
    assert len(stages) == 2 and all(type(s) is swin_micro_batches.MicroBatchedSwinStage for s in stages)
    assert list(model.state_dict()) == keys
    clones = (copy.deepcopy(model), pickle.loads(pickle.dumps(model)))  # the stage class is importable
    vision = model.config.vision_config
    tokens = (vision.image_size // vision.patch_size) ** 2  # 64 tokens of width 16 in the first stage
    first_stage_mlp_bytes = 4 * tokens * int(vision.mlp_ratio * vision.embed_dim)
    # One image's first-stage MLP activation: stage 1 one image at a time; stage 2 (a quarter of the tokens, twice
    # as wide: half the bytes) two.
    monkeypatch.setattr(swin_micro_batches, "STAGE_MICRO_BATCH_BYTES", first_stage_mlp_bytes)
    seen = {0: [], 1: []}
    for index, stage in enumerate(stages):
        stage.blocks[0].register_forward_pre_hook(lambda module, args, index=index: seen[index].append(args[0].shape[0]))
    with torch.no_grad():
        fast = model.get_image_embeddings(pixel_values)
        out = plain(pixel_values=pixel_values, output_hidden_states=True)
        hidden = tower(pixel_values=pixel_values, output_hidden_states=True)  # every stage output, joined
    assert seen == {0: [1, 1, 1, 1, 1, 1], 1: [2, 1, 2, 1]}
    want = torch.cat([out.pooler_output.unsqueeze(1), out.last_hidden_state], 1)
    torch.testing.assert_close(fast, want, atol=1e-5, rtol=1e-5)
    assert len(hidden.reshaped_hidden_states) == len(out.reshaped_hidden_states)
    for got, expected in zip(hidden.reshaped_hidden_states, out.reshaped_hidden_states):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # Splitting changes nothing, to the bit: the same packed tower with the batch whole.
    monkeypatch.setattr(swin_micro_batches, "STAGE_MICRO_BATCH_BYTES", 2**40)
    with torch.no_grad():
        assert torch.equal(model.get_image_embeddings(pixel_values), fast)
    monkeypatch.setattr(swin_micro_batches, "STAGE_MICRO_BATCH_BYTES", first_stage_mlp_bytes)
    for index in seen:
        seen[index].clear()
    model.get_image_embeddings(pixel_values)  # gradients on: the whole batch
    assert seen == {0: [3], 1: [3]}
    for clone in clones:
        assert type(clone.vision_model.encoder.layers[0]) is swin_micro_batches.MicroBatchedSwinStage
        with torch.no_grad():
            assert torch.equal(clone.get_image_embeddings(pixel_values), fast)
    unpack_cpu_weights(model)
    assert all(type(s) is SwinStage for s in stages) and list(model.state_dict()) == keys
