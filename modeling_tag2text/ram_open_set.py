"""Open-set label spaces for RAM and RAM++: new tags from their names (RAM) or descriptions (RAM++), embedded by a
CLIP text tower given as transformers' ``CLIPTextModelWithProjection`` with its ``CLIPTokenizer``.

- RAM: each tag's embedding is the mean of its 63 prompt texts' normalised CLIP embeddings, normalised again
  (the prompt ensemble of the original ``build_openset_label_embedding``; the original's name processing kept:
  ``_`` -> space, ``/`` -> `` or ``, lower case, a trailing dot dropped, the article picked from the raw name and
  "This is " put before texts starting with "a" or "the").
- RAM++: each description of a tag is embedded and normalised on its own and kept (not averaged): the model
  weighs them per image. Descriptions are truncated to CLIP's 77 tokens, as the original's ``truncate=True``. A
  tag without descriptions gets ``"a photo of a {tag}."`` alone.

Threshold 0.5 for every new tag unless given (the original's open-set scripts). ``add=True`` keeps the model's tags
(their embeddings, names and thresholds) and appends the new ones.

Package code beside the payload: imports only torch and its own folder.
"""

from __future__ import annotations

import logging

import torch

from .configuration_ram import RAM_OPEN_SET_THRESHOLD

logger = logging.getLogger(__name__)

# The prompt templates of the original's RAM open set ("{article}" is "a" or "an").
RAM_PROMPT_TEMPLATES = [
    'There is {article} {} in the scene.', 'There is the {} in the scene.', 'a photo of {article} {} in the scene.',
    'a photo of the {} in the scene.', 'a photo of one {} in the scene.', 'itap of {article} {}.', 'itap of my {}.',
    'itap of the {}.', 'a photo of {article} {}.', 'a photo of my {}.', 'a photo of the {}.', 'a photo of one {}.',
    'a photo of many {}.', 'a good photo of {article} {}.', 'a good photo of the {}.',
    'a bad photo of {article} {}.', 'a bad photo of the {}.', 'a photo of a nice {}.', 'a photo of the nice {}.',
    'a photo of a cool {}.', 'a photo of the cool {}.', 'a photo of a weird {}.', 'a photo of the weird {}.',
    'a photo of a small {}.', 'a photo of the small {}.', 'a photo of a large {}.', 'a photo of the large {}.',
    'a photo of a clean {}.', 'a photo of the clean {}.', 'a photo of a dirty {}.', 'a photo of the dirty {}.',
    'a bright photo of {article} {}.', 'a bright photo of the {}.', 'a dark photo of {article} {}.',
    'a dark photo of the {}.', 'a photo of a hard to see {}.', 'a photo of the hard to see {}.',
    'a low resolution photo of {article} {}.', 'a low resolution photo of the {}.',
    'a cropped photo of {article} {}.', 'a cropped photo of the {}.', 'a close-up photo of {article} {}.',
    'a close-up photo of the {}.', 'a jpeg corrupted photo of {article} {}.', 'a jpeg corrupted photo of the {}.',
    'a blurry photo of {article} {}.', 'a blurry photo of the {}.', 'a pixelated photo of {article} {}.',
    'a pixelated photo of the {}.', 'a black and white photo of the {}.', 'a black and white photo of {article} {}.',
    'a plastic {}.', 'the plastic {}.', 'a toy {}.', 'the toy {}.', 'a plushie {}.', 'the plushie {}.',
    'a cartoon {}.', 'the cartoon {}.', 'an embroidered {}.', 'the embroidered {}.', 'a painting of the {}.',
    'a painting of a {}.',
]
CLIP_CONTEXT_LENGTH = 77


class OpenSetError(ValueError):
    """The tags, descriptions or CLIP model cannot make a label space for this model; the message names them."""


def processed_name(name: str) -> str:
    """The original's name processing: ``_`` -> space, ``/`` -> " or ", lower case, trailing dots dropped."""
    return name.replace("_", " ").replace("/", " or ").lower().rstrip(".")


def ram_prompts(name: str) -> list[str]:
    """The 63 prompt texts of one RAM tag, as the original writes them."""
    article = "an" if name[:1] in "aeiou" and name else "a"
    texts = [template.format(processed_name(name), article=article) for template in RAM_PROMPT_TEMPLATES]
    return ["This is " + text if text.startswith(("a", "the")) else text for text in texts]


def default_description(name: str) -> str:
    return f"a photo of a {name}."


@torch.no_grad()
def clip_text_embeddings(texts: list[str], clip_model, clip_tokenizer, batch_size: int = 256) -> torch.Tensor:
    """(len(texts), projection width) L2-normalised ``text_embeds`` of a ``CLIPTextModelWithProjection``."""
    device = next(clip_model.parameters()).device
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = clip_tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                               max_length=CLIP_CONTEXT_LENGTH, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        embeds = clip_model(**batch).text_embeds.float()
        rows.append(embeds / embeds.norm(dim=-1, keepdim=True))
    return torch.cat(rows).cpu()


def check_clip_width(clip_model, label_width: int) -> None:
    """The CLIP text tower's projection must be as wide as the label embeddings it makes.

    Raises:
        OpenSetError: naming both widths.
    """
    width = getattr(getattr(clip_model, "config", None), "projection_dim", None)
    if width != label_width:
        raise OpenSetError(f"its projection width is {width}, but the label embeddings are {label_width} wide (RAM "
                           "and RAM++ use CLIP ViT-B/16's 512)")


def check_tags(tags) -> list[str]:
    if isinstance(tags, str):
        raise OpenSetError("tags must be a list of tag names, not one string")
    tags = [str(tag) for tag in tags]
    if not tags:
        raise OpenSetError("the tag list is empty")
    blank = [i for i, tag in enumerate(tags) if not tag.strip()]
    if blank:
        raise OpenSetError(f"tag {blank[0] + 1} is blank")
    seen, duplicates = set(), []
    for tag in tags:
        if tag in seen and tag not in duplicates:
            duplicates.append(tag)
        seen.add(tag)
    if duplicates:
        shown = ", ".join(map(repr, duplicates[:10])) + (" ..." if len(duplicates) > 10 else "")
        raise OpenSetError(f"{len(duplicates)} tag(s) appear more than once: {shown}")
    return tags


def descriptions_by_tag(value) -> dict:
    """``{tag: [descriptions]}`` from the original's JSON format ``[{tag: [descriptions]}, ...]`` or a dict."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list) and all(isinstance(item, dict) and len(item) == 1 for item in value):
        items = [next(iter(item.items())) for item in value]
    else:
        raise OpenSetError("descriptions must be [{tag: [descriptions]}, ...] (the original's format) or {tag: [...]}")
    result = {}
    for tag, texts in items:
        if isinstance(texts, str) or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise OpenSetError(f"descriptions of {tag!r} must be a list of strings")
        if tag in result:
            raise OpenSetError(f"descriptions: {tag!r} appears more than once")
        result[str(tag)] = list(texts)
    return result


def open_set_label_embeddings(family: str, tags, clip_model, clip_tokenizer, descriptions=None):
    """``(label embeddings, rows per tag, texts)`` of new tags for ``family`` ``"ram"`` (one averaged row per tag)
    or ``"ram_plus"`` (one row per description)."""
    tags = check_tags(tags)
    if family == "ram":
        texts = [ram_prompts(tag) for tag in tags]
        flat = [text for group in texts for text in group]
        embeds = clip_text_embeddings(flat, clip_model, clip_tokenizer).view(len(tags), len(RAM_PROMPT_TEMPLATES), -1)
        mean = embeds.mean(dim=1)
        return mean / mean.norm(dim=-1, keepdim=True), [1] * len(tags), texts
    given = descriptions_by_tag(descriptions) if descriptions is not None else {}
    unknown = sorted(set(given) - set(tags))
    if unknown:
        logger.warning("descriptions of %d tags that are not in the tag list are not used: %s", len(unknown),
                       unknown[:10])
    texts = [given.get(tag) or [default_description(tag)] for tag in tags]
    flat = [text for group in texts for text in group]
    return clip_text_embeddings(flat, clip_model, clip_tokenizer), [len(group) for group in texts], texts


def build_ram_open_set(model, tags, clip_model, clip_tokenizer, descriptions=None, threshold: float | None = None,
                   tag_names_chinese=None, add: bool = False):
    """Give ``model`` (a :class:`~.modeling_ram.RamForImageTagging` or :class:`~.modeling_ram.RamPlusForImageTagging`)
    a new label space made by the CLIP text tower, in place; returns the model.

    Args:
        tags: the new tag names (unique, not blank).
        clip_model / clip_tokenizer: ``CLIPTextModelWithProjection`` and ``CLIPTokenizer`` (ViT-B/16 for the
            released models: its 512-wide projection is the label width).
        descriptions: RAM++ only: ``[{tag: [descriptions]}, ...]`` or ``{tag: [...]}``.
        threshold: of every new tag (None: 0.5).
        tag_names_chinese: names shown as ``tags_zh`` for the new tags (None: their English names, when the model
            has Chinese names).
        add: keep the model's tags and append the new ones (which must not repeat them).

    Raises:
        OpenSetError: naming the problem (empty or duplicate tags, a CLIP width that is not the label width, ...).
    """
    config = model.config
    family = "ram_plus" if hasattr(config, "description_counts") else "ram"
    check_clip_width(clip_model, config.label_embed_size)
    if family == "ram" and descriptions is not None:
        raise OpenSetError("descriptions are a RAM++ input; RAM embeds each tag from its name with 63 prompts")
    tags = check_tags(tags)
    threshold = RAM_OPEN_SET_THRESHOLD if threshold is None else float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise OpenSetError(f"threshold {threshold} is not a probability in [0, 1]")
    if tag_names_chinese is not None and len(tag_names_chinese) != len(tags):
        raise OpenSetError(f"{len(tag_names_chinese)} Chinese names for {len(tags)} tags")
    if add:
        repeated = sorted(set(tags) & set(config.tag_names))
        if repeated:
            raise OpenSetError(f"tags the model already has: {repeated[:10]}")
    embeds, counts, _ = open_set_label_embeddings(family, tags, clip_model, clip_tokenizer, descriptions)
    thresholds = [threshold] * len(tags)
    chinese = list(tag_names_chinese) if tag_names_chinese is not None else None
    if add:
        old = model.label_embed.detach().float().cpu()
        embeds = torch.cat([old, embeds])
        if chinese is None and config.tag_names_chinese is not None:
            chinese = list(tags)
        if config.tag_names_chinese is not None or chinese is not None:
            chinese = list(config.tag_names_chinese or config.tag_names) + (chinese or list(tags))
        tags = config.tag_names + tags
        thresholds = config.threshold_list() + thresholds
        if family == "ram_plus":
            counts = config.description_counts() + counts
    fields = {"descriptions_per_tag": counts} if family == "ram_plus" else {}
    model.set_label_space(embeds, tags, chinese, thresholds, **fields)
    logger.info("label space: %d tags (%d label-embedding rows)", len(tags), embeds.shape[0])
    return model
