"""Beam search scored exactly as the released Tag2Text was (transformers 4.26), as an opt-in alternative.

Why this exists: the original called ``generate`` of transformers 4.26, whose beam search divides a finished
hypothesis' log-probability by its *full* length, the ``[DEC] a picture of`` prompt included and the final
``[SEP]`` excluded, and stops a batch item once no running beam can beat its worst kept hypothesis at the
current full length. transformers >= 4.36 divides by the number of *generated* tokens (``[SEP]`` included)
and uses other stopping and last-step rules. With a 4-token prompt the two can pick different winners.

``Tag2TextForCaptioning.generate`` keeps the current transformers rule by default (so every ``generate``
feature works: sampling, streaming, ``num_return_sequences``, caching options); ``generate(...,
beam_scoring="original")`` reproduces the original's beam output token for token, including its padding of
finished rows with ``[PAD]``; :func:`generate_like_original` is a thin alias of it with the original's argument
names.

Part of the Hub payload: imports only torch and transformers.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache


class _Hypotheses:
    """The ``num_beams`` best finished hypotheses of one image, ranked by length-normalised score."""

    def __init__(self, num_beams: int, length_penalty: float, early_stopping: bool):
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.beams: list[tuple[float, list[int]]] = []
        self.worst_score = 1e9

    def add(self, tokens: list[int], sum_logprobs: float) -> None:
        # The length is that of the tokens as stored: prompt included, the final [SEP] not yet appended.
        score = sum_logprobs / (len(tokens) ** self.length_penalty)
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, tokens))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float, cur_len: int) -> bool:
        if len(self.beams) < self.num_beams:
            return False
        if self.early_stopping:
            return True
        return self.worst_score >= best_sum_logprobs / cur_len ** self.length_penalty

    def best(self) -> list[int]:
        # sorted() is stable and the last entry wins, so among equal scores the later-added one is returned.
        return sorted(self.beams, key=lambda item: item[0])[-1][1]


def _apply_repetition_penalty(scores: torch.Tensor, input_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    picked = torch.gather(scores, 1, input_ids)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, input_ids, picked)


@torch.no_grad()
def original_beam_search(
    model,
    encoder_hidden_states: torch.Tensor,
    prompt_ids: torch.Tensor,
    num_beams: int = 3,
    max_length: int = 30,
    min_length: int = 10,
    repetition_penalty: float = 1.0,
    length_penalty: float = 1.0,
    early_stopping: bool = False,
) -> torch.LongTensor:
    """Beam search over ``model``'s text decoder with the scoring of transformers 4.26.

    Args:
        model: a ``Tag2TextForCaptioning``.
        encoder_hidden_states: (batch, tag length, hidden) interaction-encoder output, one row per image.
        prompt_ids: (batch, prompt length) decoder prompt, ``[DEC]`` first, same length in every row.
        num_beams / max_length / min_length: as the original's ``generate`` (lengths count the prompt).
    Returns:
        (batch, length) token ids: the best hypothesis, then ``[SEP]`` when shorter than the longest, then
        ``[PAD]``, exactly as the original returned them.
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be at least 1, got {num_beams}")
    if max_length <= prompt_ids.shape[1]:
        raise ValueError(f"max_length={max_length} leaves no room after a {prompt_ids.shape[1]}-token prompt")
    text = model.config.text_config
    eos, pad = text.sep_token_id, text.pad_token_id
    batch = prompt_ids.shape[0]
    device = prompt_ids.device
    encoder_states = encoder_hidden_states.repeat_interleave(num_beams, dim=0)
    input_ids = prompt_ids.repeat_interleave(num_beams, dim=0)
    beam_scores = torch.zeros(batch, num_beams, device=device)
    beam_scores[:, 1:] = -1e9  # only the first beam is live at the start, so the beams do not start identical
    beam_scores = beam_scores.view(-1)
    hypotheses = [_Hypotheses(num_beams, length_penalty, early_stopping) for _ in range(batch)]
    done = [False] * batch
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    step_ids = input_ids
    while True:
        cur_len = input_ids.shape[1]
        mask = torch.ones(input_ids.shape, dtype=torch.long, device=device)
        _, logits, *_ = model.decode_text(step_ids, encoder_states, attention_mask=mask, cache=cache)
        scores = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
        if repetition_penalty != 1.0:
            scores = _apply_repetition_penalty(scores, input_ids, repetition_penalty)
        if cur_len < min_length:
            scores[:, eos] = -float("inf")
        scores = scores + beam_scores[:, None]
        vocab = scores.shape[-1]
        top_scores, top_indices = torch.topk(scores.view(batch, num_beams * vocab), 2 * num_beams, dim=1)
        next_scores = torch.zeros(batch, num_beams, device=device)
        next_tokens = torch.full((batch, num_beams), pad, dtype=torch.long, device=device)
        next_rows = torch.arange(batch, device=device).repeat_interleave(num_beams).view(batch, num_beams)
        rows_so_far = input_ids.tolist()
        for item in range(batch):
            if done[item]:
                continue  # finished items keep padding; their result is already in the hypotheses
            slot = 0
            for rank, (score, index) in enumerate(zip(top_scores[item].tolist(), top_indices[item].tolist())):
                row, token = item * num_beams + index // vocab, index % vocab
                if token == eos:
                    # A [SEP] that ranks below the beam width does not end a hypothesis.
                    if rank < num_beams:
                        hypotheses[item].add(rows_so_far[row], score)
                else:
                    next_scores[item, slot], next_tokens[item, slot], next_rows[item, slot] = score, token, row
                    slot += 1
                if slot == num_beams:
                    break
            done[item] = done[item] or hypotheses[item].is_done(float(top_scores[item].max()), cur_len)
        beam_scores = next_scores.view(-1)
        rows = next_rows.view(-1)
        input_ids = torch.cat([input_ids[rows], next_tokens.view(-1, 1)], dim=1)
        model._reorder_cache(cache, rows)
        step_ids = next_tokens.view(-1, 1)
        if all(done) or input_ids.shape[1] >= max_length:
            break
    # Items still running at max_length: their live beams compete with the finished hypotheses.
    for item in range(batch):
        if not done[item]:
            for beam in range(num_beams):
                row = item * num_beams + beam
                hypotheses[item].add(input_ids[row].tolist(), float(beam_scores[row]))
    best = [h.best() for h in hypotheses]
    width = min(max(len(tokens) for tokens in best) + 1, max_length)
    output = torch.full((batch, width), pad, dtype=torch.long, device=device)
    for item, tokens in enumerate(best):
        output[item, : len(tokens)] = torch.tensor(tokens, dtype=torch.long, device=device)
        if len(tokens) < width:
            output[item, len(tokens)] = eos
    return output


def generate_like_original(
    model,
    pixel_values: torch.Tensor,
    tags=None,
    tokenizer=None,
    tag_threshold=None,
    num_beams: int = 3,
    max_length: int = 30,
    min_length: int = 10,
    repetition_penalty: float = 1.0,
) -> torch.LongTensor:
    """Caption token ids as the released ``Tag2Text.generate(image, sample=False, ...)`` returned them.

    A documented alias of ``model.generate(pixel_values, beam_scoring="original", ...)`` with the original's
    argument names and defaults (lengths count the prompt); with ``num_beams=1`` (greedy search, where both
    rules agree) it is ``model.generate(..., num_beams=1)``. Decode the result with ``processor.decode_captions``.
    """
    return model.generate(
        pixel_values,
        tags=tags,
        tokenizer=tokenizer,
        tag_threshold=tag_threshold,
        beam_scoring="original" if num_beams > 1 else "current",
        num_beams=num_beams,
        max_length=max_length,
        min_length=min_length,
        repetition_penalty=repetition_penalty,
    )
