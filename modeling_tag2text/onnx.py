"""Tag2Text on onnxruntime: tagging and captioning from a directory written by ``tag2text export``.

Imports only numpy, PIL, tokenizers and onnxruntime (no torch, no transformers), so a deployment needs neither:

    from tag2text.onnx import OnnxTag2Text
    model = OnnxTag2Text.from_pretrained("tag2text-onnx", providers=["CPUExecutionProvider"])
    model.tag(["photo.jpg"])                       # tags above the per-class thresholds, with scores
    ids = model.generate(["photo.jpg"])            # beam 3, as Tag2TextForCaptioning.generate
    model.decode_captions(ids)

It reproduces the PyTorch model's inference: the processor's resize and normalisation, per-class thresholds and
caption-excluded tags, the tag text (``" | "``-joined names, ``[ENC]`` first, ``max_tag_length`` tokens), and
transformers' greedy and beam search (scores divided by the generated length to the power ``length_penalty``,
its early-stopping heuristic, minimum length, repetition penalty; ``[PAD]`` after the first ``[SEP]``). Each
image is decoded independently of the others in its batch. The decoder graph runs once per generated token
with the self-attention keys and values of the earlier tokens.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

# The image conversion of the PyTorch processor (numpy and PIL only); its ImageInputError is this runtime's too.
from .generation_lengths import generation_lengths
from .image_loading import ImageInputError, pixel_arrays, to_rgb_image
from .tag_output import Tag2TextTagOutput
from .text_conventions import tag_names_per_image

logger = logging.getLogger(__name__)

MANIFEST = "onnx_config.json"
# Generation settings this runtime implements; any other non-default value in generation_config.json is refused.
_DEFAULTS = {"do_sample": False, "num_return_sequences": 1, "no_repeat_ngram_size": 0, "bad_words_ids": None,
             "forced_bos_token_id": None, "forced_eos_token_id": None, "suppress_tokens": None,
             "begin_suppress_tokens": None, "sequence_bias": None, "exponential_decay_length_penalty": None,
             "encoder_no_repeat_ngram_size": 0, "diversity_penalty": 0.0, "num_beam_groups": 1}


class OnnxModelError(ValueError):
    """An export directory or an input that the runtime cannot use; the message names it.

    Images that cannot be read raise :class:`ImageInputError` instead, the error of the PyTorch processor (the same
    class, from ``tag2text.processing``), so that one ``except`` serves both backends; both are ``ValueError``.
    """


# ----------------------------------------------------------------------------------------------------------------
# Numerics shared by the searches
# ----------------------------------------------------------------------------------------------------------------


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values per row, largest first (ties: lower index first).

    The same indices as ``np.argsort(-values, kind="stable")[:, :k]``, without sorting the whole row: beam search
    asks for 2 x beams of beams x vocabulary (91,566 per image at the released sizes) every step, and a full sort
    of those cost more than the decoder step itself at batch 8. A partition finds the k-th largest value; every
    index at or above it is sorted by (value descending, index ascending). A row where that set is not exactly k
    (ties at the k-th value, NaN) is sorted whole, so ties resolve as the full sort would.
    """
    if k >= values.shape[-1]:
        return np.argsort(-values, axis=-1, kind="stable")[:, :k]
    partition = np.argpartition(-values, k - 1, axis=-1)[:, :k]
    picked = np.take_along_axis(values, partition, axis=-1)
    kth = picked.min(axis=-1, keepdims=True)
    if not ((values >= kth).sum(axis=-1) == k).all():
        return np.argsort(-values, axis=-1, kind="stable")[:, :k]
    # The partition holds exactly the values at or above the k-th: order them by value, then index.
    order = np.lexsort((partition, -picked), axis=-1)
    return np.take_along_axis(partition, order, axis=-1)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float32)))).astype(np.float32)


class OnnxImageInputs:
    """Pixel values for an onnxruntime runner, as Tag2TextImageProcessor computes them (numpy and PIL only): the
    one reading of the exported processor settings, shared by :class:`OnnxTag2Text` and the RAM tagger. A
    runner names the error it raises for bad inputs in ``input_error``."""

    input_error = OnnxModelError

    def _read_image_settings(self, image_settings: dict) -> None:
        self.image_size = int(image_settings["size"])
        self.resample = image_settings.get("resample", "bilinear")
        # The processor's settings as Tag2TextImageProcessor reads them (its defaults where a key is absent).
        self.rescale_factor = (float(image_settings.get("rescale_factor", 1 / 255))
                               if image_settings.get("do_rescale", True) else None)
        normalize = image_settings.get("do_normalize", True)
        self.image_mean = list(image_settings["image_mean"]) if normalize else None
        self.image_std = list(image_settings["image_std"]) if normalize else None

    def preprocess(self, images) -> np.ndarray:
        """(batch, 3, size, size) float32 pixel values, as Tag2TextImageProcessor computes them."""
        if isinstance(images, (list, tuple)) or (isinstance(images, np.ndarray) and images.ndim == 4):
            items = list(images)
        else:
            items = [images]
        if not items:
            raise ImageInputError("no images were given")
        images = [to_rgb_image(item, index) for index, item in enumerate(items)]
        return pixel_arrays(images, self.image_size, self.image_size, self.resample, self.rescale_factor,
                            self.image_mean, self.image_std)

    def _pixels(self, images, pixel_values) -> np.ndarray:
        if (images is None) == (pixel_values is None):
            raise self.input_error("pass exactly one of images and pixel_values")
        if pixel_values is None:
            return self.preprocess(images)
        pixel_values = np.ascontiguousarray(pixel_values, dtype=np.float32)
        expected = (3, self.image_size, self.image_size)
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != expected:
            raise self.input_error(f"pixel_values must have shape (batch, {', '.join(map(str, expected))}), "
                                   f"got {pixel_values.shape}")
        return pixel_values


class OnnxTag2Text(OnnxImageInputs):
    """Tag2Text inference on onnxruntime; build it with :meth:`from_pretrained`."""

    def __init__(self, directory: Path, sessions: dict, manifest: dict, config: dict, generation: dict,
                 image_settings: dict, tokenizer):
        self.directory = directory
        self.sessions = sessions
        self.manifest = manifest
        self.config = config
        self.generation_config = generation
        self.tag_names = list(config["tag_names"])
        self.thresholds = np.asarray(manifest["tag_thresholds"], dtype=np.float32)
        self.excluded_tag_ids = list(manifest["caption_excluded_tag_ids"])
        self.token_ids = dict(manifest["token_ids"])
        # The generation config's eos and pad ids are those PyTorch's generate uses (the text config's otherwise).
        eos = generation.get("eos_token_id")
        eos = eos[0] if isinstance(eos, list) and len(eos) == 1 else eos
        if isinstance(eos, list):
            raise OnnxModelError(f"{os.fspath(directory)!r}: several eos ids {eos} are not supported")
        self.eos_id = int(eos) if eos is not None else int(self.token_ids["eos"])
        pad = generation.get("pad_token_id")
        self.pad_id = int(pad) if pad is not None else int(self.token_ids["pad"])
        self.tag_token_ids = config["tag_token_ids"]
        self.tag_separator_token_ids = config["tag_separator_token_ids"]
        self._read_image_settings(image_settings)
        self.tokenizer = tokenizer
        self._check_generation_config()

    # -- loading -----------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, directory, providers=None, session_options=None) -> "OnnxTag2Text":
        """Load an export directory.

        Args:
            directory: written by ``tag2text export`` / :func:`tag2text.hub.export_onnx`.
            providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).
            session_options: an ``onnxruntime.SessionOptions`` for all three sessions (threads, profiling).
        """
        import onnxruntime as ort
        from tokenizers import Tokenizer

        root = Path(directory)
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise OnnxModelError(f"{os.fspath(root)!r} is not a Tag2Text ONNX export: {MANIFEST} is missing")
        manifest = _read_json(manifest_path)
        config = _read_json(root / "config.json")
        generation = _read_json(root / "generation_config.json") if (root / "generation_config.json").is_file() else {}
        processor = _read_json(root / "processor_config.json") if (root / "processor_config.json").is_file() else {}
        image_settings = processor.get("image_processor")
        if image_settings is None and (root / "preprocessor_config.json").is_file():
            image_settings = _read_json(root / "preprocessor_config.json")
        if image_settings is None:
            raise OnnxModelError(f"{os.fspath(root)!r}: no image processor settings (processor_config.json)")
        tokenizer_path = root / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise OnnxModelError(f"{os.fspath(tokenizer_path)!r} is missing")
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        sessions = {}
        for name, file_name in manifest["graphs"].items():
            path = root / file_name
            if not path.is_file():
                raise OnnxModelError(f"{os.fspath(path)!r} is missing")
            sessions[name] = ort.InferenceSession(os.fspath(path), sess_options=session_options, providers=providers)
        tokenizer = Tokenizer.from_file(os.fspath(tokenizer_path))
        return cls(root, sessions, manifest, config, generation, image_settings, tokenizer)

    def _check_generation_config(self):
        for key, default in _DEFAULTS.items():
            value = self.generation_config.get(key, default)
            if value is not None and value != default:
                raise OnnxModelError(
                    f"{os.fspath(self.directory / 'generation_config.json')!r}: {key}={value!r} is not supported by "
                    "the ONNX runtime (greedy and beam search only)"
                )

    # -- tagging -----------------------------------------------------------------------------------------------

    def tag_logits(self, images=None, pixel_values=None):
        """Raw tag logits (batch, num_tags) and image embeddings (batch, tokens, width)."""
        logits, embeds = self.sessions["tagger"].run(None, {"pixel_values": self._pixels(images, pixel_values)})
        return logits, embeds

    def _threshold_array(self, threshold) -> np.ndarray:
        if threshold is None:
            return self.thresholds
        if isinstance(threshold, (int, float)):
            if not 0.0 <= float(threshold) <= 1.0:
                raise OnnxModelError(f"threshold must be in [0, 1], got {threshold}")
            return np.full(len(self.tag_names), float(threshold), dtype=np.float32)
        values = np.asarray(threshold, dtype=np.float32)
        if values.shape != (len(self.tag_names),):
            raise OnnxModelError(
                f"threshold must be a float or {len(self.tag_names)} values, got shape {values.shape}")
        return values

    def select_tags(self, tag_logits: np.ndarray, threshold=None, exclude_caption_excluded: bool = True):
        """Class indices whose probability is strictly above the threshold, per image, in index order."""
        fired = _sigmoid(tag_logits) > self._threshold_array(threshold)
        if exclude_caption_excluded and self.excluded_tag_ids:
            fired[:, self.excluded_tag_ids] = False
        return [np.flatnonzero(row).tolist() for row in fired]

    def tag(self, images=None, threshold=None, include_excluded: bool = False, pixel_values=None):
        """Tags per image above the per-class thresholds (or ``threshold``), as Tag2TextModel.tag."""
        logits, _ = self.tag_logits(images, pixel_values)
        probs = _sigmoid(logits)
        return [
            Tag2TextTagOutput(tags=[self.tag_names[i] for i in ids], tag_ids=ids, scores=[float(row[i]) for i in ids])
            for row, ids in zip(probs, self.select_tags(logits, threshold, not include_excluded))
        ]

    # -- tag text ----------------------------------------------------------------------------------------------

    def build_tag_input_ids(self, tag_ids_per_image):
        """``[ENC] t1 | t2 ... [SEP]`` padded to ``max_tag_length`` (as Tag2TextModel.build_tag_input_ids)."""
        length = int(self.manifest["max_tag_length"])
        rows, masks = [], []
        for ids in tag_ids_per_image:
            tokens = []
            for position, index in enumerate(ids):
                if position:
                    tokens.extend(self.tag_separator_token_ids)
                tokens.extend(self.tag_token_ids[index])
            tokens = [self.token_ids["enc"]] + tokens[: length - 2] + [self.token_ids["sep"]]
            masks.append([1] * len(tokens) + [0] * (length - len(tokens)))
            rows.append(tokens + [self.token_ids["pad"]] * (length - len(tokens)))
        return np.asarray(rows, dtype=np.int64), np.asarray(masks, dtype=np.int64)

    def parse_tags(self, tags, batch_size: int):
        """User tags as a list of names per image, read as the processor and the PyTorch model read them
        (:func:`~.text_conventions.tag_names_per_image`)."""
        try:
            return tag_names_per_image(tags, batch_size, self.manifest["tag_separator"])
        except (TypeError, ValueError) as error:
            raise OnnxModelError(str(error)) from error

    def resolve_tags(self, tags, batch_size: int):
        """Tag input ids, mask, names and class ids (None when a name is not in the tag list) of user tags."""
        names_per_image = self.parse_tags(tags, batch_size)
        index_of = {}
        for index, name in enumerate(self.tag_names):
            index_of.setdefault(name, index)
        if all(n in index_of for names in names_per_image for n in names):
            known = [[index_of[n] for n in names] for names in names_per_image]
            ids, mask = self.build_tag_input_ids(known)
            return ids, mask, names_per_image, known
        # Free-form tags: tokenized like the processor (truncated and padded to max_tag_length, [ENC] first).
        length = int(self.manifest["max_tag_length"])
        tokenizer = self.tokenizer
        tokenizer.enable_truncation(max_length=length)
        tokenizer.enable_padding(length=length, pad_id=self.token_ids["pad"],
                                 pad_token=tokenizer.id_to_token(self.token_ids["pad"]))
        try:
            encoded = tokenizer.encode_batch([self.manifest["tag_separator"].join(n) for n in names_per_image])
        finally:
            tokenizer.no_truncation()
            tokenizer.no_padding()
        ids = np.asarray([e.ids for e in encoded], dtype=np.int64)
        ids[:, 0] = self.token_ids["enc"]
        return ids, np.asarray([e.attention_mask for e in encoded], dtype=np.int64), names_per_image, None

    def encode_tags(self, image_embeds, tag_input_ids, tag_attention_mask):
        """Interaction-encoder states and the decoder's cross-attention keys/values (one pair per layer)."""
        outputs = self.sessions["text_encoder"].run(None, {
            "image_embeds": image_embeds, "tag_input_ids": tag_input_ids, "tag_attention_mask": tag_attention_mask})
        return outputs[0], outputs[1:]

    # -- generation --------------------------------------------------------------------------------------------

    def _lengths(self, prompt_length, max_new_tokens, min_new_tokens, max_length, min_length):
        """(max total length, min total length) by the rule Tag2TextForCaptioning.generate uses."""
        total_max, total_min = generation_lengths(prompt_length, self.generation_config, max_new_tokens,
                                                  min_new_tokens, max_length, min_length)
        if total_max <= prompt_length:
            raise OnnxModelError(
                f"the maximum length {total_max} leaves no room after the {prompt_length}-token prompt")
        return total_max, total_min

    def _decoder_step(self, input_ids, past, cross):
        layers = int(self.manifest["decoder_layers"])
        feed = {"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64)}
        for index in range(layers):
            feed[f"past_key_{index}"], feed[f"past_value_{index}"] = past[2 * index], past[2 * index + 1]
            feed[f"cross_key_{index}"], feed[f"cross_value_{index}"] = cross[2 * index], cross[2 * index + 1]
        outputs = self.sessions["text_decoder"].run(None, feed)
        return outputs[0], outputs[1:]

    def _empty_past(self, rows):
        shape = (rows, int(self.manifest["decoder_heads"]), 0, int(self.manifest["decoder_head_dim"]))
        return [np.zeros(shape, dtype=np.float32) for _ in range(2 * int(self.manifest["decoder_layers"]))]

    def _process(self, sequences, scores, cur_len, min_length, repetition_penalty):
        """transformers' logits processors in their order: repetition penalty, then the minimum length."""
        if repetition_penalty != 1.0:
            picked = np.take_along_axis(scores, sequences[:, :cur_len], axis=1)
            picked = np.where(picked < 0, picked * np.float32(repetition_penalty),
                              picked / np.float32(repetition_penalty))
            np.put_along_axis(scores, sequences[:, :cur_len], picked, axis=1)
        if cur_len < min_length:
            scores[:, self.eos_id] = -np.inf
        return scores

    def generate(self, images=None, tags=None, num_beams=None, max_new_tokens=None, min_new_tokens=None,
                 max_length=None, min_length=None, repetition_penalty=None, length_penalty=None, early_stopping=None,
                 tag_threshold=None, pixel_values=None, return_dict: bool = False):
        """Tag the images, encode the tags with each image, decode a caption (Tag2TextForCaptioning.generate).

        Args:
            images: paths, PIL images or arrays (or ``pixel_values`` from :meth:`preprocess`).
            tags: steer with given tags: per image a list of names or a ``" | "``-joined string.
            num_beams / max_new_tokens / min_new_tokens / max_length / min_length / repetition_penalty /
                length_penalty / early_stopping: as in ``generate``; defaults from generation_config.json.
            tag_threshold: a float or per-class values instead of the exported thresholds.
            return_dict: return ``{"sequences", "tags", "tag_ids", "tag_logits"}`` instead of the ids.

        Returns:
            (batch, length) int64 token ids with the prompt, ``[PAD]`` after each row's ``[SEP]``.
        """
        pixels = self._pixels(images, pixel_values)
        tag_logits, image_embeds = self.sessions["tagger"].run(None, {"pixel_values": pixels})
        batch = pixels.shape[0]
        if tags is None:
            tag_ids = self.select_tags(tag_logits, tag_threshold)
            names = [[self.tag_names[i] for i in ids] for ids in tag_ids]
            tag_input_ids, tag_mask = self.build_tag_input_ids(tag_ids)
        else:
            tag_input_ids, tag_mask, names, tag_ids = self.resolve_tags(tags, batch)
            tag_logits = None
        _, cross = self.encode_tags(image_embeds, tag_input_ids, tag_mask)
        prompt = [self.token_ids["bos"]] + list(self.manifest["prompt_token_ids"])
        max_total, min_total = self._lengths(len(prompt), max_new_tokens, min_new_tokens, max_length, min_length)
        generation = self.generation_config
        beams = int(num_beams if num_beams is not None else generation.get("num_beams", 1))
        penalty = float(repetition_penalty if repetition_penalty is not None else
                        generation.get("repetition_penalty", 1.0))
        if beams < 1:
            raise OnnxModelError(f"num_beams must be at least 1, got {beams}")
        if beams == 1:
            sequences = self._greedy(prompt, batch, cross, max_total, min_total, penalty)
        else:
            sequences = self._beam_search(
                prompt, batch, cross, beams, max_total, min_total, penalty,
                float(length_penalty if length_penalty is not None else generation.get("length_penalty", 1.0)),
                early_stopping if early_stopping is not None else generation.get("early_stopping", False))
        self._pad_after_eos(sequences, len(prompt))
        if return_dict:
            return {"sequences": sequences, "tags": names, "tag_ids": tag_ids, "tag_logits": tag_logits}
        return sequences

    def _greedy(self, prompt, batch, cross, max_total, min_total, penalty):
        eos, pad = self.eos_id, self.pad_id
        sequences = np.asarray([prompt] * batch, dtype=np.int64)
        unfinished = np.ones(batch, dtype=bool)
        past, step_input = self._empty_past(batch), sequences
        while True:
            logits, past = self._decoder_step(step_input, past, cross)
            cur_len = sequences.shape[1]
            scores = self._process(sequences, logits.astype(np.float32, copy=True), cur_len, min_total, penalty)
            tokens = np.where(unfinished, scores.argmax(axis=-1), pad).astype(np.int64)
            sequences = np.concatenate([sequences, tokens[:, None]], axis=1)
            unfinished &= tokens != eos
            if sequences.shape[1] >= max_total or not unfinished.any():
                return sequences
            step_input = tokens[:, None]

    def _beam_search(self, prompt, batch, cross, beams, max_total, min_total, penalty, length_penalty, early_stopping):
        """transformers 5's vectorised beam search (GenerationMixin._beam_search), one image per batch row."""
        eos, pad = self.eos_id, self.pad_id
        prompt_length = len(prompt)
        keep = 2 * beams
        fill = pad or eos  # transformers' placeholder (the eos id when [PAD] is 0); replaced after eos anyway
        running = np.full((batch, beams, max_total), fill, dtype=np.int64)
        running[:, :, :prompt_length] = prompt
        finished_sequences = running.copy()
        running_scores = np.zeros((batch, beams), dtype=np.float32)
        running_scores[:, 1:] = -1e9
        finished_scores = np.full((batch, beams), -1e9, dtype=np.float32)
        is_finished = np.zeros((batch, beams), dtype=bool)
        improvable = np.ones((batch, 1), dtype=bool)
        running_indices = np.full((batch, beams, max_total - prompt_length), -1, dtype=np.int64)
        finished_indices = running_indices.copy()
        top_beam_mask = np.arange(keep) < beams
        cross = [np.repeat(state, beams, axis=0) for state in cross]
        past = self._empty_past(batch * beams)
        step_input = running[:, :, :prompt_length].reshape(batch * beams, prompt_length)
        cur_len = prompt_length
        rows = np.arange(batch)[:, None]
        while True:
            logits, past = self._decoder_step(step_input, past, cross)
            flat = running[:, :, :cur_len].reshape(batch * beams, cur_len)
            log_probs = self._process(flat, _log_softmax(logits.astype(np.float32)), cur_len, min_total, penalty)
            vocab = log_probs.shape[-1]
            accumulated = (log_probs.reshape(batch, beams, vocab) + running_scores[:, :, None]).reshape(batch, -1)
            # c. the top 2 x beams continuations over all beams of each image
            top = _top_k(accumulated, keep)
            top_scores = np.take_along_axis(accumulated, top, axis=1)
            source_beam = top // vocab
            top_sequences = running[rows, source_beam]
            top_sequences[:, :, cur_len] = top % vocab
            top_indices = running_indices[rows, source_beam]
            top_indices[:, :, cur_len - prompt_length] = source_beam + np.arange(batch)[:, None] * beams
            # d. which continuations are done (eos or the maximum length)
            hits = (top_sequences[:, :, cur_len] == eos) | (cur_len + 1 >= max_total)
            # e. the best unfinished continuations run on
            running_candidates = top_scores + hits.astype(np.float32) * np.float32(-1e9)
            chosen = _top_k(running_candidates, beams)
            running = np.take_along_axis(top_sequences, chosen[:, :, None], axis=1)
            running_scores = np.take_along_axis(running_candidates, chosen, axis=1)
            running_indices = np.take_along_axis(top_indices, chosen[:, :, None], axis=1)
            # f. finished continuations among the top `beams` join the finished set if they beat it
            just_finished = hits & top_beam_mask[None, :]
            candidate_scores = top_scores / np.float32((cur_len + 1 - prompt_length) ** length_penalty)
            full = is_finished.all(axis=-1, keepdims=True) & (early_stopping is True)
            candidate_scores = candidate_scores + full.astype(np.float32) * np.float32(-1e9)
            candidate_scores = candidate_scores + (~improvable).astype(np.float32) * np.float32(-1e9)
            candidate_scores = candidate_scores + (~just_finished).astype(np.float32) * np.float32(-1e9)
            merged_scores = np.concatenate([finished_scores, candidate_scores], axis=1)
            best = _top_k(merged_scores, beams)
            finished_sequences = np.take_along_axis(
                np.concatenate([finished_sequences, top_sequences], axis=1), best[:, :, None], axis=1)
            finished_indices = np.take_along_axis(
                np.concatenate([finished_indices, top_indices], axis=1), best[:, :, None], axis=1)
            is_finished = np.take_along_axis(np.concatenate([is_finished, just_finished], axis=1), best, axis=1)
            finished_scores = np.take_along_axis(merged_scores, best, axis=1)
            # g. reorder the cache for the running beams; stop when no image can improve
            beam_index = running_indices[:, :, cur_len - prompt_length].reshape(-1)
            if not (beam_index == np.arange(beam_index.size)).all():  # copying 2 x layers caches costs ~10 ms
                past = [state[beam_index] for state in past]
            cur_len += 1
            if early_stopping == "never" and length_penalty > 0.0:
                best_length = max_total - prompt_length
            else:
                best_length = cur_len - prompt_length
            best_running = running_scores[:, :1] / np.float32(best_length ** length_penalty)
            worst_finished = np.where(is_finished, finished_scores.min(axis=1, keepdims=True), np.float32(-1e9))
            improvable = improvable & (best_running > worst_finished).any(axis=-1, keepdims=True)
            open_beam = not (is_finished.all() and early_stopping is True)
            if not (improvable.any() and open_beam and not hits.all()):
                break
            step_input = running[:, :, cur_len - 1].reshape(batch * beams, 1)
        generated = int(((finished_indices[:, 0, :] + 1) != 0).sum(axis=1).max())
        return finished_sequences[:, 0, : prompt_length + generated].copy()

    def _pad_after_eos(self, sequences, prompt_length: int) -> None:
        generated = sequences[:, prompt_length:]
        is_eos = generated == self.eos_id
        after = np.cumsum(is_eos, axis=1) - is_eos
        generated[after > 0] = self.pad_id

    # -- text --------------------------------------------------------------------------------------------------

    def decode_captions(self, sequences) -> list[str]:
        """Captions without special tokens and without the prompt (Tag2TextProcessor.decode_captions)."""
        texts = self.tokenizer.decode_batch([list(map(int, row)) for row in sequences], skip_special_tokens=True)
        prompt = self.manifest["prompt"].strip().lower()
        captions = []
        for text in texts:
            stripped = text.strip()
            if prompt and stripped.lower().startswith(prompt):
                stripped = stripped[len(prompt):]
            captions.append(stripped.strip())
        return captions

    def caption(self, images=None, **kwargs) -> list[str]:
        """Captions of the images (``generate`` then :meth:`decode_captions`)."""
        return self.decode_captions(self.generate(images, **kwargs))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise OnnxModelError(f"cannot read {os.fspath(path)!r}: {error}") from error
