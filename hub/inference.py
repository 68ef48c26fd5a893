"""Tagging and captioning a batch: every entry point's model calls (``tag2text caption`` on either backend, its
sharded run, ``tag2text serve``) go through a :class:`Backend`, and every result row is built by
:func:`tag2text.tag_output.result_rows` (which the image-to-text pipeline uses too).

A backend takes a batch of pixel values and, per image, optional steering tags and an optional threshold, and
returns one row per image: ``{"tags", "tag_scores", "caption"}`` (``tags``: those the caption was written from,
the steering tags when given; ``tag_scores``: the predicted tags' probabilities, also when tags steer). Each image
keeps its own tags and threshold inside a shared batch, so a batched row is the row that image gets alone.

Tagging-only models (RAM, RAM++: no caption decoder) run on :class:`TaggingBackend`, whose ``writes_captions`` is
False: its rows are ``{"tags", "tags_zh", "tag_scores"}`` from ``tag``; :func:`torch_backend` picks the class.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from ..tag_output import result_rows, tag_scores


class Backend(Protocol):
    """What the caption, annotate and serve paths need of a model."""

    prompt_length: int  # [DEC] and the prompt: where generated tokens start
    generation_defaults: object  # the model's generation config (a GenerationConfig or its JSON as a dict)
    writes_captions: bool  # False: a tagging-only model; callers use tag() (tag_and_caption raises)

    def pixel_values(self, images):
        """The batch of pixel values of a list of RGB images, ready for :meth:`tag_and_caption`."""

    def tag(self, pixel_values, thresholds: Sequence | None = None) -> list[dict]:
        """``{"tags", "tag_scores"}`` per image, without the decoder."""

    def tag_and_caption(self, pixel_values, tags: Sequence | None = None, thresholds: Sequence | None = None,
                        **generation) -> list[dict]:
        """``{"tags", "tag_scores", "caption"}`` per image.

        Args:
            tags: None, or per image None (caption from the predicted tags), a ``"a | b"`` string or a list of
                names (steer the caption with these).
            thresholds: None, or per image None (the model's per-class thresholds) or a float.
            **generation: ``generate`` keywords (num_beams, max_length, max_new_tokens, ...).
        """


def per_image(values, count: int, name: str) -> list:
    """``values`` as a list of ``count`` entries (None: ``count`` Nones)."""
    if values is None:
        return [None] * count
    values = list(values)
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} entries for {count} images")
    return values


def generation_options(backend, num_beams=None, max_length=None) -> dict:
    """generate() keywords from ``--num-beams`` / ``--max-length`` for either backend.

    The minimum length is the one both backends' ``generate`` would pick
    (:func:`tag2text.generation_lengths.generation_lengths` on the model's defaults), passed clipped to the
    maximum: the released minimum (10 tokens with the prompt) is above a short ``--max-length``, and transformers
    warns about a minimum it cannot reach (the caption is the same either way)."""
    from ..generation_lengths import generation_lengths

    kwargs = {}
    if num_beams is not None:
        kwargs["num_beams"] = num_beams
    if max_length is not None:
        kwargs["max_length"] = max_length
        _, minimum = generation_lengths(backend.prompt_length, backend.generation_defaults, max_length=max_length)
        kwargs["min_length"] = min(max_length, minimum)
    return kwargs


def unknown_steering_tags(tags: str, separator: str, tokenizer) -> list[str]:
    """The names in a ``"a | b"`` tag string that the tokenizer spells with ``[UNK]`` (or with no token at all)."""
    names = [n.strip() for n in tags.split(separator.strip() or None)] if tags else []
    unknown = []
    for name in (n for n in names if n):
        ids = tokenizer.encode(name, add_special_tokens=False)
        if not ids or tokenizer.unk_token_id in ids:
            unknown.append(name)
    return unknown


class TorchBackend:
    """A ``Tag2TextForCaptioning`` and its processor. One batch runs the vision tower and the tagging head once
    per image, then the decoder from the visual tokens (``generate(image_embeds=...)``)."""

    writes_captions = True

    def __init__(self, model, processor):
        self.model = model
        self.processor = processor
        self.prompt_length = 1 + len(model.config.prompt_token_ids or [])  # [DEC] and the prompt
        self.generation_defaults = model.generation_config

    def pixel_values(self, images):
        return self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.model.device,
                                                                                     self.model.dtype)

    def _embed_and_tag(self, pixel_values, thresholds):
        """Visual tokens, and per image the predicted (class ids, names, scores)."""
        import torch

        model = self.model
        image_embeds = model.get_image_embeddings(pixel_values)
        tag_logits = model.get_tag_logits(image_embeds)
        probabilities = torch.sigmoid(tag_logits.float()).tolist()
        names = model.config.tag_names
        predicted = []
        for row, threshold in enumerate(per_image(thresholds, len(probabilities), "thresholds")):
            ids = model.select_tags(tag_logits[row: row + 1], threshold)[0]
            row_names = [names[i] for i in ids]
            predicted.append((ids, row_names, tag_scores(row_names, [probabilities[row][i] for i in ids])))
        return image_embeds, predicted

    def tag(self, pixel_values, thresholds=None) -> list[dict]:
        import torch

        with torch.no_grad():
            _, predicted = self._embed_and_tag(pixel_values, thresholds)
        return result_rows([names for _, names, _ in predicted], [scores for _, _, scores in predicted])

    def tag_and_caption(self, pixel_values, tags=None, thresholds=None, **generation) -> list[dict]:
        import torch

        model, tokenizer = self.model, self.processor.tokenizer
        with torch.no_grad():
            image_embeds, predicted = self._embed_and_tag(pixel_values, thresholds)
            device = image_embeds.device
            rows, masks, used = [], [], []
            for (ids, names, _), steering in zip(predicted, per_image(tags, len(predicted), "tags")):
                if steering is None:
                    input_ids, attention_mask = model.build_tag_input_ids([ids], device=device)
                    used.append(names)
                else:
                    input_ids, attention_mask, given, _ = model.resolve_tags([steering], 1, tokenizer=tokenizer,
                                                                             device=device)
                    used.append(given[0])
                rows.append(input_ids)
                masks.append(attention_mask)
            outputs = model.generate(image_embeds=image_embeds, tag_input_ids=torch.cat(rows),
                                     tag_attention_mask=torch.cat(masks), tokenizer=tokenizer,
                                     return_dict_in_generate=True, **generation)
        captions = self.processor.decode_captions(outputs.sequences)
        return result_rows(used, [scores for _, _, scores in predicted], captions)


class OnnxBackend:
    """An :class:`tag2text.onnx.OnnxTag2Text` export (onnxruntime, no torch). Images that share their steering
    tags and threshold are captioned in one ``generate`` call."""

    writes_captions = True

    def __init__(self, runtime):
        self.runtime = runtime
        self.prompt_length = 1 + len(runtime.manifest["prompt_token_ids"])  # [DEC] and the prompt
        self.generation_defaults = runtime.generation_config

    def pixel_values(self, images):
        return self.runtime.preprocess(images)

    def tag(self, pixel_values, thresholds=None) -> list[dict]:
        thresholds = per_image(thresholds, len(pixel_values), "thresholds")
        rows = [None] * len(pixel_values)
        for (threshold,), indices in _groups(thresholds).items():
            tagged = self.runtime.tag(pixel_values=_take(pixel_values, indices), threshold=threshold)
            for index, output in zip(indices, tagged):
                rows[index] = result_rows([output.tags], [tag_scores(output.tags, output.scores)])[0]
        return rows

    def tag_and_caption(self, pixel_values, tags=None, thresholds=None, **generation) -> list[dict]:
        count = len(pixel_values)
        tags, thresholds = per_image(tags, count, "tags"), per_image(thresholds, count, "thresholds")
        rows = [None] * count
        for (steering, threshold), indices in _groups(tags, thresholds).items():
            pixels = _take(pixel_values, indices)
            tagged = self.runtime.tag(pixel_values=pixels, threshold=threshold)
            steer = [tags[indices[0]]] * len(indices) if steering is not None else None
            outputs = self.runtime.generate(pixel_values=pixels, tags=steer, tag_threshold=threshold,
                                            return_dict=True, **generation)
            captions = self.runtime.decode_captions(outputs["sequences"])
            scores = [tag_scores(output.tags, output.scores) for output in tagged]
            for index, row in zip(indices, result_rows(outputs["tags"], scores, captions)):
                rows[index] = row
        return rows


class TaggingBackend:
    """A tagging-only model (``RamForImageTagging``, ``RamPlusForImageTagging``) and its image processor. Rows are
    ``model.tag``'s outputs (per-class thresholds, or one threshold per image) through
    :func:`~tag2text.tag_output.result_rows`: ``{"tags", "tags_zh", "tag_scores"}`` (``tags_zh`` None where the
    model has no Chinese names); images that share a threshold are tagged in one call."""

    writes_captions = False
    prompt_length = 0  # no decoder: nothing is generated
    generation_defaults = None

    def __init__(self, model, image_processor):
        self.model = model
        self.tagger = model  # anything with tag(pixel_values=..., threshold=...) -> outputs with tags, scores, tags_zh
        # A Tag2TextProcessor works too (its image processor is used).
        self.image_processor = getattr(image_processor, "image_processor", image_processor)

    def pixel_values(self, images):
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"].to(self.model.device,
                                                                                          self.model.dtype)

    def tag(self, pixel_values, thresholds=None) -> list[dict]:
        thresholds = per_image(thresholds, len(pixel_values), "thresholds")
        rows = [None] * len(pixel_values)
        for (threshold,), indices in _groups(thresholds).items():
            outputs = self.tagger.tag(pixel_values=_take(pixel_values, indices), threshold=threshold)
            built = result_rows([output.tags for output in outputs],
                                [tag_scores(output.tags, output.scores) for output in outputs],
                                chinese_per_image=[output.tags_zh for output in outputs])
            for index, row in zip(indices, built):
                rows[index] = row
        return rows

    def tag_and_caption(self, pixel_values, tags=None, thresholds=None, **generation) -> list[dict]:
        raise ValueError(f"{type(self.tagger).__name__} is a tagging-only model: it has no caption decoder")


class OnnxTaggingBackend(TaggingBackend):
    """A tagging-only RAM / RAM++ export (:class:`tag2text.onnx_ram.OnnxRamTagger`, onnxruntime, no torch): the
    rows of :class:`TaggingBackend`."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.tagger = runtime

    def pixel_values(self, images):
        return self.runtime.preprocess(images)


def is_tagging_only_model(model) -> bool:
    """Whether ``model`` tags without writing captions (RAM, RAM++: ``tag`` but no ``generate`` path)."""
    from .model_source import tagging_only_family

    return tagging_only_family(getattr(model.config, "model_type", None)) is not None


def torch_backend(model, processor):
    """:class:`TaggingBackend` for a tagging-only model, else :class:`TorchBackend`."""
    return TaggingBackend(model, processor) if is_tagging_only_model(model) else TorchBackend(model, processor)


def _groups(*columns) -> dict:
    """Image indices by their equal per-image values (lists of names compared as tuples), in first-seen order."""
    groups = {}
    for index, values in enumerate(zip(*columns)):
        key = tuple(tuple(v) if isinstance(v, list) else v for v in values)
        groups.setdefault(key, []).append(index)
    return groups


def _take(pixel_values, indices):
    return pixel_values if len(indices) == len(pixel_values) else pixel_values[indices]


def caption_batch(model, processor, images, tags=None, threshold=None, generate_kwargs=None) -> list[dict]:
    """Rows of a list of RGB PIL images (or anything the processor takes) on a PyTorch model: the same steering
    tags and threshold for every image."""
    backend = TorchBackend(model, processor)
    count = len(images)
    return backend.tag_and_caption(backend.pixel_values(images), tags=[tags] * count if tags else None,
                                   thresholds=[threshold] * count, **(generate_kwargs or {}))
