"""Opt-in CPU inference with packed oneDNN weights: ``pack_cpu_weights(model)``.

A model computes with ``nn.Linear`` as built. :func:`pack_cpu_weights` puts a :class:`PackedLinear` (holding the
same Parameters: state-dict keys, initialisation and training behaviour stay those of ``nn.Linear``) in place of
every linear layer of the vision tower, the interaction encoder and the text decoder; in CPU inference those
multiply with a copy of their weight packed in oneDNN's blocked layout, the way PyTorch's own compiler packs the
weights of frozen CPU models (``mkldnn._linear_pointwise``). Measured with ``benchmarks/inference.py``
(``--packing``): see the README. The ``tag2text`` commands that only run inference (caption, annotate, serve,
evaluate) switch it on; :func:`unpack_cpu_weights` switches it off.

The packed copy belongs to its module: it is not a parameter or buffer (state dicts, ``deepcopy`` and pickling
never see it), ``train()`` and ``to()``/``half()``/``cuda()`` drop it, and it is remade whenever the weight may
have changed. Every use compares the weight's storage, version counter, shape and dtype with the copy's, and an
exact fingerprint of its values (:func:`_weight_fingerprint`), so fused optimizer steps and writes through
``.data`` (which leave the version counter alone) are followed. The fingerprint is one read of the weight; it is
read once per call of a packed module tree (forward hooks installed by :func:`pack_cpu_weights` tell the layers
below that weights cannot change until the call returns) and once per generation for the decoder's steps. The
copies cost the weights' memory once more.

Imports torch, its sibling text module and the Swin micro-batches (transformers' Swin).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from .modeling_tag2text_text import Tag2TextEncoder, Tag2TextTextDecoder, is_tracing
from .swin_micro_batches import micro_batch_swin_stages


def _weight_fingerprint(weight: torch.Tensor) -> torch.Tensor:
    """Per-row sums of the weight's bit patterns, modulo 2**32: a change to any one element changes its row's sum
    (two distinct 32-bit words differ by a nonzero amount below 2**32; only changes that cancel within a row go
    unseen). One read of the weight and no temporary of its size.

    The sum is taken in int32 and wraps on overflow, which is what makes it cheap: an int64 accumulator was five
    times slower (108 ms against 20 ms per 94M float32 weights, measured), a fifth of a batch-1 generate call at
    the released size. Half-precision weights are summed as pairs of elements (one 32-bit word each)."""
    weight = weight.detach()
    size = weight.element_size()
    if size == 4 or (size == 2 and weight.shape[-1] % 2 == 0 and weight.is_contiguous()):
        return weight.view(torch.int32).sum(dim=-1, dtype=torch.int32)
    return weight.view({2: torch.int16, 8: torch.int64}.get(size, torch.uint8)).sum(
        dim=-1, dtype=torch.int64)


class PackedLinear(nn.Linear):
    """``nn.Linear`` that multiplies with a packed oneDNN copy of its weight in CPU inference.

    The packed path is taken only in eval mode, without gradients, on the CPU, in float32 or bfloat16 (or under
    bfloat16 autocast, packed in bfloat16), on plain tensors and outside every tracer and compiler (see
    :func:`~.modeling_tag2text_text.is_tracing`); everything else is ``nn.Linear``. Results equal ``nn.Linear``
    to float rounding. ``cpu_weight_packing = False`` on an instance switches it off.
    """

    cpu_weight_packing = True
    # "gelu" when :func:`pack_cpu_weights` moved the exact GELU that follows this layer into it (see _fuse_gelu):
    # oneDNN then applies it to the product in one pass; every other path applies it after nn.Linear's product.
    activation = None
    _packed = None  # (weight key, weight fingerprint, packed weight)
    _trust_token = None  # set by a packed module tree for one call: weights do not change while it is set
    _verified_token = None  # the trust token under which the packed copy was last checked against the weight

    @classmethod
    def sharing(cls, linear: nn.Linear) -> "PackedLinear":
        """A PackedLinear holding ``linear``'s own Parameter objects (nothing copied, same state-dict keys)."""
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        new.weight = linear.weight
        new.bias = linear.bias
        new.train(linear.training)
        return new

    def train(self, mode: bool = True):
        self._packed = None
        return super().train(mode)

    def _apply(self, fn, recurse=True):
        self._packed = None
        return super()._apply(fn, recurse)

    def __getstate__(self):
        state = super().__getstate__()
        for name in ("_packed", "_trust_token", "_verified_token"):
            state.pop(name, None)
        return state

    def forward(self, input):
        packed = self._packed_for(input)
        if packed is None:
            output = nn.functional.linear(input, self.weight, self.bias)
            return output if self.activation is None else nn.functional.gelu(output)
        packed, dtype = packed
        bias = None if self.bias is None else self.bias.to(dtype)
        input = input.to(dtype).contiguous()
        if self.activation is None:
            return torch.ops.mkldnn._linear_pointwise(input, packed, bias, "none", [], "")
        if dtype != torch.float32:
            # In bfloat16 the post-op would apply GELU before the product is rounded to bfloat16, not after it as
            # nn.Linear + GELU do: other numbers, and other captions (measured). Fused in float32 only.
            return nn.functional.gelu(torch.ops.mkldnn._linear_pointwise(input, packed, bias, "none", [], ""))
        # "none" as the GELU algorithm is the exact (erf) GELU, as nn.functional.gelu's default.
        return torch.ops.mkldnn._linear_pointwise(input, packed, bias, "gelu", [], "none")

    def _packed_for(self, input):
        """``(packed weight, compute dtype)`` when this call takes the packed path, else None."""
        if (not self.cpu_weight_packing or self.training or input.device.type != "cpu" or torch.is_grad_enabled()
                or is_tracing(input, self.weight) or input.numel() == 0 or not torch.backends.mkldnn.is_available()):
            return None
        dtype = input.dtype
        if torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
        elif self.weight.dtype != dtype:
            return None
        if dtype not in (torch.float32, torch.bfloat16):
            return None
        packed = self._packed_weight(dtype)
        return None if packed is None else (packed, dtype)

    def _packed_weight(self, dtype):
        weight = self.weight
        try:
            version = weight._version
        except RuntimeError:  # weights made under torch.inference_mode track no version: never cache them
            return None
        key = (weight.data_ptr(), version, tuple(weight.shape), weight.stride(), weight.dtype, dtype)
        cached, token = self._packed, self._trust_token
        if cached is not None and cached[0] == key:
            if token is not None and self._verified_token is token:
                return cached[2]
            fingerprint = _weight_fingerprint(weight)
            if torch.equal(fingerprint, cached[1]):
                self._verified_token = token
                return cached[2]
        else:
            fingerprint = _weight_fingerprint(weight)
        self._packed = None  # free the stale copy before making the new one
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype), None)
        self._packed = (key, fingerprint, packed)
        self._verified_token = token
        return packed


# -- trust: one weight check per call of a packed module tree ---------------------------------------------------

# The trust token of the generation in progress, per decoder cache (weak keys: a cache's entry goes with it).
_GENERATION_TOKENS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def trust_packed_weights(module: nn.Module, token: object | None = None) -> list:
    """Tell the PackedLinears under ``module`` that weights do not change until :func:`end_packed_weight_trust`
    (the caller's promise for one call): each checks its packed copy once under ``token`` and then trusts it.

    An outer call's token stays in place (one check per outermost call). Returns the linears to release.
    """
    if is_tracing():
        return []
    token = object() if token is None else token
    taken = []
    for child in module.modules():
        if isinstance(child, PackedLinear) and child._trust_token is None:
            child._trust_token = token
            taken.append(child)
    return taken


def end_packed_weight_trust(linears: list) -> None:
    for linear in linears:
        linear._trust_token = None


def _generation_token(cache):
    """A generation's later decoder steps (same cache, already filled) reuse its first step's token, so packed
    copies are checked once per generation, not at every step. The cache holds keys and values made from the
    weights of those steps; weights changed in the middle of a generation would leave it stale just the same."""
    if is_tracing() or cache is None:
        return None  # a fresh token (or none under tracing)
    token = _GENERATION_TOKENS.get(cache)
    if token is None or cache.get_seq_length() == 0:
        token = _GENERATION_TOKENS[cache] = object()
    return token


def _begin_call(module, args, kwargs):
    token = _generation_token(kwargs.get("cache")) if isinstance(module, Tag2TextTextDecoder) else None
    module.__dict__.setdefault("_packed_trust", []).append(trust_packed_weights(module, token))


def _end_call(module, args, kwargs, output):
    end_packed_weight_trust(module.__dict__["_packed_trust"].pop())


def _packed_trees(model: nn.Module) -> list:
    """The module trees whose linear layers are packed: the vision tower (a transformers model), every text
    encoder and every text decoder; the small projection heads stay ``nn.Linear``."""
    trees, covered = [], set()
    for module in model.modules():
        if id(module) not in covered and isinstance(module, (Tag2TextEncoder, Tag2TextTextDecoder)):
            trees.append(module)
            covered.update(id(inner) for inner in module.modules())
    vision = getattr(model, "vision_model", None)
    return trees + ([vision] if vision is not None else [])


# Feed-forward blocks whose linear layer is followed directly by its activation, by class name: (linear, activation)
# attribute names. transformers' Swin has had both layouts (SwinMLP in recent releases, SwinIntermediate before).
_LINEAR_THEN_ACTIVATION = {"SwinMLP": ("fc1", "activation_fn"), "SwinIntermediate": ("dense", "intermediate_act_fn"),
                           "Tag2TextIntermediate": ("dense", "intermediate_act_fn")}


class GeluInLinear(nn.Identity):
    """Stands where an exact GELU was after :func:`pack_cpu_weights` moved it into the linear layer before it
    (``PackedLinear.activation``); keeps the GELU module for :func:`unpack_cpu_weights`."""

    def __init__(self, gelu: nn.Module):
        super().__init__()
        self.__dict__["moved"] = gelu  # not a child module: the activation is not applied here


def _is_exact_gelu(module) -> bool:
    # transformers' GELUActivation with torch's erf GELU (not the tanh or Python variants), or nn.GELU("none").
    if type(module).__name__ == "GELUActivation":
        return getattr(module, "act", None) is nn.functional.gelu
    return isinstance(module, nn.GELU) and module.approximate == "none"


def _fuse_gelu(tree: nn.Module) -> None:
    for module in tree.modules():
        names = _LINEAR_THEN_ACTIVATION.get(type(module).__name__)
        if names is None:
            continue
        linear, activation = getattr(module, names[0], None), getattr(module, names[1], None)
        if isinstance(linear, PackedLinear) and linear.activation is None and _is_exact_gelu(activation):
            linear.activation = "gelu"
            setattr(module, names[1], GeluInLinear(activation))


def _unfuse_gelu(tree: nn.Module) -> None:
    for module in tree.modules():
        names = _LINEAR_THEN_ACTIVATION.get(type(module).__name__)
        if names is not None and isinstance(getattr(module, names[1], None), GeluInLinear):
            setattr(module, names[1], getattr(module, names[1]).moved)
            getattr(module, names[0]).activation = None


def _swap_linears(parent: nn.Module, pack: bool) -> None:
    """``parent``'s linear children become PackedLinears (``pack``) or nn.Linear again, holding the same
    Parameters."""
    for name, child in list(parent.named_children()):
        if pack and type(child) is nn.Linear:
            setattr(parent, name, PackedLinear.sharing(child))
        elif not pack and type(child) is PackedLinear:
            plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None, device="meta")
            plain.weight, plain.bias = child.weight, child.bias
            plain.train(child.training)
            setattr(parent, name, plain)


def pack_cpu_weights(model: nn.Module) -> nn.Module:
    """Switch on packed CPU weights for ``model`` (a Tag2Text, RAM or RAM++ model); returns it. Calling it again
    does nothing.

    An exact GELU right after a packed layer (the feed-forward blocks of the Swin tower and the BERT layers) moves
    into that layer, where in float32 oneDNN applies it to the product in the same pass (measured: bit-identical
    results, 10% less time for that layer); in bfloat16 it runs after the product, as before. The Swin tower's
    stages run in micro-batches of images (:mod:`.swin_micro_batches`; the same numbers)."""
    for tree in _packed_trees(model):
        for parent in list(tree.modules()):
            _swap_linears(parent, pack=True)
        _fuse_gelu(tree)
        micro_batch_swin_stages(tree, enable=True)
        if _begin_call not in tree._forward_pre_hooks.values():
            tree.register_forward_pre_hook(_begin_call, with_kwargs=True)
            tree.register_forward_hook(_end_call, with_kwargs=True, always_call=True)
    return model


def unpack_cpu_weights(model: nn.Module) -> nn.Module:
    """Undo :func:`pack_cpu_weights`: ``nn.Linear`` layers holding the same Parameters again, activations back in
    place; returns ``model``."""
    for tree in _packed_trees(model):
        _unfuse_gelu(tree)
        micro_batch_swin_stages(tree, enable=False)
        for parent in list(tree.modules()):
            _swap_linears(parent, pack=False)
        for hooks, hook in ((tree._forward_pre_hooks, _begin_call), (tree._forward_hooks, _end_call)):
            for key in [key for key, value in hooks.items() if value is hook]:
                del hooks[key]
                tree._forward_hooks_with_kwargs.pop(key, None)
                tree._forward_pre_hooks_with_kwargs.pop(key, None)
                tree._forward_hooks_always_called.pop(key, None)
    return model


def packed_linears(model: nn.Module) -> list:
    """The PackedLinears of ``model`` (empty unless :func:`pack_cpu_weights` was called)."""
    return [module for module in model.modules() if isinstance(module, PackedLinear)]
