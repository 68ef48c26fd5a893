"""The BERT-style text transformer of Tag2Text: interaction encoder, text decoder and the shared layers
that the tag recognition head runs.

Why not transformers' ``BertModel``: in transformers 5 it refuses cross-attention without ``is_decoder``
(the interaction encoder is bidirectional *and* cross-attends), it has token-type embeddings that Tag2Text
lacks, and it has no cross-attention-only mode with its own head count (the tagging head). The layout and
parameter names follow the original (BLIP ``med.py``) so checkpoints map one to one.

Part of the Hub payload: imports only torch, transformers and its single-dot sibling ``version_compat``.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer

from .version_compat import registered_attention_function

logger = logging.getLogger(__name__)

# The original builds self-attention masks as (1 - mask) * -10000 (not finfo.min); kept for parity.
SELF_ATTENTION_MASK_VALUE = -10000.0


def eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, probs


def _attention_function(implementation: str | None, output_attentions: bool):
    if output_attentions or implementation in (None, "eager"):
        return eager_attention
    return registered_attention_function(implementation, eager_attention)


def extended_self_attention_mask(
    attention_mask: torch.Tensor, query_length: int, causal: bool, dtype: torch.dtype
) -> torch.Tensor:
    """Additive mask (B, 1, Lq, Lk) from a (B, Lk) padding mask; Lk - Lq earlier positions come from the cache."""
    batch, key_length = attention_mask.shape
    mask = attention_mask[:, None, None, :].to(dtype)
    if causal:
        past = key_length - query_length
        query_pos = torch.arange(past, key_length, device=attention_mask.device)
        key_pos = torch.arange(key_length, device=attention_mask.device)
        causal_mask = (key_pos[None, :] <= query_pos[:, None]).to(dtype)
        mask = causal_mask[None, None, :, :] * mask
    return (1.0 - mask) * SELF_ATTENTION_MASK_VALUE


def is_tracing(*tensors) -> bool:
    """Whether this code runs under a tracer or compiler (torch.compile, torch.export, TorchScript tracing, ONNX
    export) or on tensor subclasses such as fake or functional tensors. There only plain tensor operations without
    data-dependent Python control flow may run, so the CPU inference shortcuts of this module step aside."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    return any(type(tensor) not in (torch.Tensor, nn.Parameter) for tensor in tensors)


def cpu_inference(module: nn.Module, tensor: torch.Tensor) -> bool:
    """Whether ``module`` computes ``tensor`` in CPU inference (eval mode, no gradients, eagerly, a plain CPU
    tensor): where this library's CPU shortcuts (row chunks, micro-batches) may run. Not in training mode
    even without gradients: dropout in slices would draw its random numbers in another order."""
    return (tensor.device.type == "cpu" and not module.training and not torch.is_grad_enabled()
            and not is_tracing(tensor))


class Tag2TextTextEmbeddings(nn.Module):
    """Word plus absolute position embeddings, LayerNorm, dropout (no token types)."""

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids=None, inputs_embeds=None, position_ids=None, past_length: int = 0):
        if inputs_embeds is None:
            if not is_tracing(input_ids) and input_ids.numel():
                # Eager only, as for positions: the bare lookup fails with "index out of range in self".
                vocab = self.word_embeddings.num_embeddings
                low, high = int(input_ids.min()), int(input_ids.max())
                if low < 0 or high >= vocab:
                    bad = low if low < 0 else high
                    raise ValueError(f"token id {bad} is outside the vocabulary of {vocab} (text_config.vocab_size)")
            inputs_embeds = self.word_embeddings(input_ids)
        length = inputs_embeds.shape[1]
        limit = self.position_embeddings.num_embeddings
        if position_ids is None and past_length + length > limit:
            raise ValueError(f"sequence position {past_length + length - 1} exceeds max_position_embeddings={limit}")
        if position_ids is None:
            position_ids = torch.arange(past_length, past_length + length, device=inputs_embeds.device)[None, :]
        elif not is_tracing(position_ids) and int(position_ids.max()) >= limit:
            # Checked eagerly only: a traced graph cannot branch on values (the embedding lookup fails there).
            raise ValueError(f"sequence position {int(position_ids.max())} exceeds max_position_embeddings={limit}")
        embeddings = inputs_embeds + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class Tag2TextAttentionProjections(nn.Module):
    """Query/key/value projections and the attention itself (``attention.self`` in the original)."""

    def __init__(self, config, key_value_width: int, is_cross_attention: bool, layer_idx: int):
        super().__init__()
        self.config = config
        self.num_attention_heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(key_value_width, config.hidden_size)
        self.value = nn.Linear(key_value_width, config.hidden_size)
        self.dropout_prob = config.attention_probs_dropout_prob
        self.is_cross_attention = is_cross_attention
        self.is_causal = False  # masks are always passed explicitly
        self.layer_idx = layer_idx

    def _project_query(self, hidden_states):
        # In inference, label queries the same for every image (expanded over the batch with stride 0) are
        # projected once and expanded again: the same numbers, a batch's worth less work (and no copy of the
        # expanded input). Not with gradients: the weight's gradient would be summed in another order, and a
        # training run would no longer reproduce its weights bit for bit.
        if (hidden_states.dim() == 3 and hidden_states.shape[0] > 1 and hidden_states.stride(0) == 0
                and not torch.is_grad_enabled() and not is_tracing(hidden_states)):
            return self.query(hidden_states[:1]).expand(hidden_states.shape[0], -1, -1)
        return self.query(hidden_states)

    def _heads(self, states, num_heads):
        batch, length, width = states.shape
        return states.view(batch, length, num_heads, width // num_heads).transpose(1, 2)

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        encoder_hidden_states=None,
        cache: Cache | None = None,
        num_heads: int | None = None,
        output_attentions: bool = False,
    ):
        num_heads = num_heads or self.num_attention_heads
        query = self._heads(self._project_query(hidden_states), num_heads)
        if self.is_cross_attention:
            cross_cache = cache if isinstance(cache, EncoderDecoderCache) else None
            if cross_cache is not None and cross_cache.is_updated.get(self.layer_idx):
                key = cross_cache.cross_attention_cache.layers[self.layer_idx].keys
                value = cross_cache.cross_attention_cache.layers[self.layer_idx].values
            else:
                if encoder_hidden_states is None:  # a filled cross-attention cache (above) needs none
                    raise ValueError("cross-attention needs encoder_hidden_states (or a cache that holds their keys "
                                     "and values)")
                key = self._heads(self.key(encoder_hidden_states), num_heads)
                value = self._heads(self.value(encoder_hidden_states), num_heads)
                if cross_cache is not None:
                    # The encoder states are fixed during generation: project them once, not at every step.
                    key, value = cross_cache.cross_attention_cache.update(key, value, self.layer_idx)
                    cross_cache.is_updated[self.layer_idx] = True
        else:
            key = self._heads(self.key(hidden_states), num_heads)
            value = self._heads(self.value(hidden_states), num_heads)
            if cache is not None:
                self_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
                key, value = self_cache.update(key, value, self.layer_idx)
        if attention_mask is not None:
            attention_mask = attention_mask.to(query.dtype)
        attention = _attention_function(self.config._attn_implementation, output_attentions)
        output, weights = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=query.shape[-1] ** -0.5,
            dropout=self.dropout_prob if self.training else 0.0,
        )
        output = output.reshape(*hidden_states.shape[:-1], -1)
        return output, (weights if output_attentions else None)


class Tag2TextResidualOutput(nn.Module):
    """Post-LN residual block end: LayerNorm(dropout(dense(x)) + residual). ``attention.output`` and
    ``output`` in the original layout."""

    def __init__(self, config, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class Tag2TextAttention(nn.Module):
    def __init__(self, config, key_value_width: int, is_cross_attention: bool, layer_idx: int):
        super().__init__()
        self.self = Tag2TextAttentionProjections(config, key_value_width, is_cross_attention, layer_idx)
        self.output = Tag2TextResidualOutput(config, config.hidden_size)

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, cache=None, num_heads=None,
                output_attentions=False):
        attended, weights = self.self(
            hidden_states, attention_mask, encoder_hidden_states, cache, num_heads, output_attentions
        )
        return self.output(attended, hidden_states), weights


class Tag2TextIntermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


MODES = ("multimodal", "text", "tagging")

# Feed-forward rows per chunk in CPU inference when text_config.chunk_size_feed_forward is None (the default).
CPU_INFERENCE_CHUNK_SIZE_FEED_FORWARD = 512


class Tag2TextLayer(GradientCheckpointingLayer):
    """Post-LN block: self-attention, cross-attention, feed-forward.

    ``mode`` selects the path as the original does: ``"multimodal"`` runs all three, ``"text"`` skips the
    cross-attention, ``"tagging"`` skips the self-attention (the Query2Label head) and may use another
    number of heads on the same weights.
    """

    def __init__(self, config, cross_attention_width: int, layer_idx: int, self_attention: bool = True):
        super().__init__()
        self.config = config
        # Without self-attention (RAM++'s stand-alone tagging head, whose self-attention the original deletes)
        # the layer runs only in "tagging" mode; the attribute stays so that checks read one name.
        self.attention = Tag2TextAttention(config, config.hidden_size, False, layer_idx) if self_attention else None
        self.crossattention = Tag2TextAttention(config, cross_attention_width, True, layer_idx)
        self.intermediate = Tag2TextIntermediate(config)
        self.output = Tag2TextResidualOutput(config, config.intermediate_size)

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        encoder_hidden_states=None,
        cache=None,
        mode: str = "multimodal",
        num_heads: int | None = None,
        output_attentions: bool = False,
    ):
        self_weights = cross_weights = None
        if mode != "tagging":
            if self.attention is None:
                raise ValueError(f"this layer has no self-attention and runs only in mode 'tagging', not {mode!r}")
            hidden_states, self_weights = self.attention(
                hidden_states, attention_mask, cache=cache, output_attentions=output_attentions
            )
        if mode == "text":
            return self._feed_forward(hidden_states), self_weights, cross_weights
        cross_arguments = dict(cache=cache if mode == "multimodal" else None,
                               num_heads=num_heads if mode == "tagging" else None, output_attentions=output_attentions)
        if self._rows_in_cpu_chunks(hidden_states):
            # The attention's output block (dense, residual, LayerNorm) and the feed-forward block after it both
            # work row by row: run them together on each slice of rows, so a slice stays in cache from the one to
            # the other (RAM's tagging head, 4,585 queries per image, batch 8: 4.88 s -> 4.65 s, best of 5 alternating,
            # bit-identical logits).
            attended, cross_weights = self.crossattention.self(
                hidden_states, None, encoder_hidden_states, **cross_arguments)
            output = self.crossattention.output
            return self._in_row_chunks(lambda rows, residual: self._feed_forward_chunk(output(rows, residual)),
                                       attended, hidden_states), self_weights, cross_weights
        hidden_states, cross_weights = self.crossattention(hidden_states, None, encoder_hidden_states,
                                                           **cross_arguments)
        return self._feed_forward(hidden_states), self_weights, cross_weights

    def _feed_forward(self, hidden_states):
        """The feed-forward block, ``chunk_size_feed_forward`` positions of the sequence at a time.

        Every position is computed on its own either way (as transformers' ``apply_chunking_to_forward``; here
        the last chunk may be shorter). ``None``, the default, means 512 rows at a time in CPU inference (over
        the positions of every image of the batch) and none otherwise: the tagging head runs the block on 3,429
        queries per image, whose 4x wider intermediate activation is 42 MB per image, fresh memory on every call
        written to and read back from DRAM; in 512-row slices it stays in cache (measured 7-10% faster for the
        head in CPU inference).
        """
        configured = getattr(self.config, "chunk_size_feed_forward", None)
        if configured is not None:  # transformers' setting: that many positions of the sequence at a time
            if not configured or hidden_states.shape[1] <= configured:
                return self._feed_forward_chunk(hidden_states)
            return torch.cat([self._feed_forward_chunk(piece) for piece in hidden_states.split(configured, dim=1)],
                             dim=1)
        if not self._rows_in_cpu_chunks(hidden_states):
            return self._feed_forward_chunk(hidden_states)
        return self._in_row_chunks(self._feed_forward_chunk, hidden_states)

    def _rows_in_cpu_chunks(self, hidden_states) -> bool:
        """CPU inference with more rows than one chunk and no chunk size configured (see :meth:`_feed_forward`)."""
        return (getattr(self.config, "chunk_size_feed_forward", None) is None and cpu_inference(self, hidden_states)
                and hidden_states.shape[:-1].numel() > CPU_INFERENCE_CHUNK_SIZE_FEED_FORWARD)

    @staticmethod
    def _in_row_chunks(function, *tensors):
        """``function`` on CPU_INFERENCE_CHUNK_SIZE_FEED_FORWARD rows at a time of equally shaped (batch, length,
        width) ``tensors``, its (1, rows, width) results joined back into (batch, length, width).

        The slices run over every position of every image of the batch (a batch of 8 would otherwise make 8 x
        512-row slices that no longer stay in cache; measured 5% faster for the feed-forward block at batch 8);
        when a tensor cannot be viewed that way without a copy (label queries expanded over the batch with
        stride 0, the residual of the first tagging layer), within each image instead."""
        chunk = CPU_INFERENCE_CHUNK_SIZE_FEED_FORWARD
        batch, length, width = tensors[0].shape
        if all(tensor.is_contiguous() for tensor in tensors):
            pieces = zip(*(tensor.view(1, batch * length, width).split(chunk, dim=1) for tensor in tensors))
        else:
            pieces = ([tensor[image:image + 1, start:start + chunk] for tensor in tensors]
                      for image in range(batch) for start in range(0, length, chunk))
        return torch.cat([function(*piece) for piece in pieces], dim=1).view(batch, length, -1)

    def _feed_forward_chunk(self, hidden_states):
        return self.output(self.intermediate(hidden_states), hidden_states)


class Tag2TextEncoder(nn.Module):
    def __init__(self, config, cross_attention_width: int, self_attention: bool = True):
        super().__init__()
        self.layer = nn.ModuleList(
            Tag2TextLayer(config, cross_attention_width, i, self_attention) for i in range(config.num_hidden_layers)
        )

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        encoder_hidden_states=None,
        cache=None,
        mode: str = "multimodal",
        num_heads: int | None = None,
        num_layers: int | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ):
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_self = () if output_attentions else None
        all_cross = () if output_attentions else None
        for layer in self.layer[: num_layers or len(self.layer)]:
            # Tensors that need gradients go positionally so re-entrant checkpointing propagates them.
            hidden_states, self_weights, cross_weights = layer(
                hidden_states,
                attention_mask,
                encoder_hidden_states,
                cache=cache,
                mode=mode,
                num_heads=num_heads,
                output_attentions=output_attentions,
            )
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if output_attentions:
                all_self += (self_weights,)
                all_cross += (cross_weights,)
        return hidden_states, all_hidden, all_self, all_cross


class Tag2TextTextModel(nn.Module):
    """Embeddings plus encoder; ``is_decoder`` switches the self-attention to causal."""

    def __init__(self, config, cross_attention_width: int):
        super().__init__()
        self.config = config
        self.embeddings = Tag2TextTextEmbeddings(config)
        self.encoder = Tag2TextEncoder(config, cross_attention_width)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        encoder_hidden_states=None,
        inputs_embeds=None,
        position_ids=None,
        cache=None,
        is_decoder: bool = False,
        mode: str = "multimodal",
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        batch, length = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        past_length = cache.get_seq_length() if cache is not None else 0
        embeddings = self.embeddings(input_ids, inputs_embeds, position_ids, past_length)
        if attention_mask is None:
            attention_mask = torch.ones(batch, past_length + length, dtype=torch.long, device=embeddings.device)
        elif not is_tracing(attention_mask) and tuple(attention_mask.shape) != (batch, past_length + length):
            # A mask of another width would broadcast into the scores or fail deep inside the attention.
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the input needs ({batch}, "
                f"{past_length + length}): {past_length} cached plus {length} new positions"
            )
        extended = extended_self_attention_mask(attention_mask, length, is_decoder, embeddings.dtype)
        return self.encoder(
            embeddings,
            extended,
            encoder_hidden_states,
            cache=cache,
            mode=mode,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )


class Tag2TextPredictionHeadTransform(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class Tag2TextLMPredictionHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.transform = Tag2TextPredictionHeadTransform(config)
        # Output weights are tied to the input word embeddings; the bias is a separate parameter.
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states):
        return self.decoder(self.transform(hidden_states)) + self.bias


class Tag2TextOnlyMLMHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = Tag2TextLMPredictionHead(config)

    def forward(self, hidden_states):
        return self.predictions(hidden_states)


class Tag2TextTextDecoder(nn.Module):
    """Causal text decoder that cross-attends to the interaction encoder (``text_decoder`` in the original)."""

    def __init__(self, config):
        super().__init__()
        self.bert = Tag2TextTextModel(config, cross_attention_width=config.hidden_size)
        self.cls = Tag2TextOnlyMLMHead(config)

    def forward(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, position_ids=None, cache=None,
                output_attentions=False, output_hidden_states=False):
        hidden, all_hidden, self_attn, cross_attn = self.bert(
            input_ids,
            attention_mask,
            encoder_hidden_states,
            position_ids=position_ids,
            cache=cache,
            is_decoder=True,
            mode="multimodal",
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        return self.cls(hidden), all_hidden, self_attn, cross_attn


def language_modeling_loss(logits, labels, label_smoothing: float, reduction: str = "mean"):
    """Next-token cross-entropy with label smoothing; -100 labels are ignored.

    ``reduction="none"`` returns one summed loss per sequence, as the original does.
    """
    shifted = logits[:, :-1, :].contiguous().float()
    targets = labels[:, 1:].contiguous().to(shifted.device)
    loss = nn.functional.cross_entropy(
        shifted.view(-1, shifted.shape[-1]),
        targets.view(-1),
        ignore_index=-100,
        label_smoothing=label_smoothing,
        reduction="mean" if reduction == "mean" else "none",
    )
    if reduction == "none":
        loss = loss.view(targets.shape).sum(dim=1)
    return loss
