"""Model cards (README.md) for Tag2Text model directories and Hub repos.

A card says what the model is, its tags and thresholds, how to use it, where the weights came from
(conversion of the released checkpoint, or training), evaluation numbers when they are known, the license
and the citation. Numbers are never invented: a card without evaluation results says so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

CITATION = """@article{huang2023tag2text,
  title={Tag2Text: Guiding Vision-Language Model via Image Tagging},
  author={Huang, Xinyu and Zhang, Youcai and Ma, Jinyu and Tian, Weiwei and Feng, Rui and Zhang, Yuejie and Li, Yaqian and Guo, Yandong and Zhang, Lei},
  journal={arXiv preprint arXiv:2303.05657},
  year={2023}
}"""

ORIGINAL_REPOSITORY = "https://github.com/xinyu1205/recognize-anything"
PAPER = "https://arxiv.org/abs/2303.05657"


def _describe_vision(config) -> str:
    vision = config.vision_config
    if vision.model_type == "swin":
        return (f"Swin Transformer (embed dim {vision.embed_dim}, depths {list(vision.depths)}, heads "
                f"{list(vision.num_heads)}, window {vision.window_size}) at {vision.image_size}x{vision.image_size} px")
    return f"ViT (hidden {vision.hidden_size}, {vision.num_hidden_layers} layers) at {vision.image_size} px"


def _tag_label(config, index: int) -> str:
    return f"{index} `{config.tag_names[index]}`"


def _evaluation_section(evaluation) -> str:
    if not evaluation:
        return ("No evaluation results are recorded for this model directory. The paper reports the released "
                "model's tagging and captioning results; they were not re-measured here.")
    rows = ["| metric | value |", "| --- | --- |"]
    for name, value in evaluation.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        rows.append(f"| {name} | {shown} |")
    return "\n".join(rows)


def render_model_card(
    config,
    repo_id: str | None = None,
    source: str | None = None,
    evaluation: dict | None = None,
    license: str = "apache-2.0",
    new_parameters: list[str] | None = None,
) -> str:
    """The README.md text for a model with ``config``.

    Args:
        config: the model's :class:`Tag2TextConfig`.
        repo_id: the Hub repo the card is for (used in the code examples; a placeholder otherwise).
        source: Markdown describing where the weights came from (conversion details or training run).
        evaluation: metric name -> value, shown as a table; ``None`` says that none are recorded.
        license: SPDX id for the card metadata (the original code is Apache-2.0).
        new_parameters: model tensors that the source weights did not have (initialised fresh); the card
            warns that the features they compute are untrained.
    """
    name = repo_id or "path/to/this-model"
    text = config.text_config
    thresholds = config.tag_thresholds
    threshold_lines = ", ".join(f"{_tag_label(config, i)}: {v}" for i, v in sorted(thresholds.items())) or "none"
    excluded = ", ".join(_tag_label(config, i) for i in config.caption_excluded_tag_ids) or "none"
    prompt_tokens = 1 + len(config.prompt_token_ids or [])
    from ..configuration_tag2text import generation_defaults

    decoding = generation_defaults(config)
    fresh = ""
    if new_parameters:
        modules = sorted({key.split(".")[0] for key in new_parameters})
        fresh = (
            "\n\n**Untrained parts.** The source weights have no image-text alignment heads, so "
            f"{', '.join(f'`{m}`' for m in modules)} are freshly initialised: `get_image_features`, "
            "`get_text_features` and `get_itm_logits` give meaningless values until the model is fine-tuned "
            "with the alignment losses. Tagging and captioning do not use them."
        )
    front_matter = "\n".join([
        "---",
        f"license: {license}",
        "library_name: transformers",
        "pipeline_tag: image-to-text",
        "tags:",
        "- tag2text",
        "- image-tagging",
        "- image-captioning",
        "- custom_code",
        "---",
    ])
    body = f"""
# Tag2Text ({config.num_tags} tags, {config.vision_config.image_size} px)

Tag2Text ([paper]({PAPER}), [original code]({ORIGINAL_REPOSITORY})) recognises image tags and writes a
caption guided by them. This repository holds it in Hugging Face transformers form: one
`Tag2TextForCaptioning` model with the remote code it needs (`trust_remote_code=True`), its processor and
an `image-to-text` pipeline.

- **Image encoder:** {_describe_vision(config)}; the mean-pooled token followed by the patch tokens.
- **Tag recognition:** a Query2Label head ({config.tagging_config.num_hidden_layers} cross-attention layers,
  {config.tagging_config.num_attention_heads} heads) with one learned query per tag, sharing its weights with
  the interaction encoder's first layers.
- **Image-tag interaction encoder and text decoder:** BERT-style, {text.num_hidden_layers} layers, hidden size
  {text.hidden_size}, {text.num_attention_heads} heads, vocabulary {text.vocab_size} (BERT uncased plus
  `[DEC]` and `[ENC]`).

## Tags and thresholds

- {config.num_tags} tags (`config.tag_names`, in class-index order; names may repeat, tags are identified by index).
- A tag fires when its sigmoid probability is **strictly above** its threshold: {config.tag_threshold} for every
  tag, except {threshold_lines}.
- Tags left out of the caption prompt (still reported by tagging): {excluded}.
- Predicted tags are joined with `{config.tag_separator.strip()}` in index order and truncated to
  {config.max_tag_length} tokens; the caption starts from the prompt `{config.prompt.strip()}`.

## Usage

```python
from transformers import pipeline

captioner = pipeline("image-to-text", model="{name}", trust_remote_code=True)
captioner("photo.jpg")
# [{{'generated_text': '...', 'tags': [...]}}]
captioner("photo.jpg", tags=["dog", "grass"])  # steer the caption with your own tags
```

```python
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{name}", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("{name}", trust_remote_code=True)
pixel_values = processor(images=Image.open("photo.jpg"))["pixel_values"]
with torch.no_grad():
    tags = model.tag(pixel_values)[0]            # names, indices and probabilities
    ids = model.generate(pixel_values)           # beam 3, as released
print(tags.tags, processor.decode_captions(ids))
```

With the `tag2text` Python package of this port installed, `trust_remote_code` is not needed and the
command line works too: `tag2text caption --model {name} photo.jpg`.

Decoding defaults (`generation_config.json`) are the released ones: beam search with {decoding["num_beams"]} beams,
at most {decoding["max_new_tokens"]} and at least {decoding["min_new_tokens"]} new tokens after the
{prompt_tokens}-token prompt (the original's `max_length` and `min_length` counted the prompt). Beam scores are
normalised by the number of generated tokens, as current transformers does; the released code's transformers 4.26
divided by the full length including the prompt, which can pick another beam.
`model.generate(pixel_values, beam_scoring="original")` reproduces the original's beam output exactly.

## Where the weights come from

{source or "Not recorded."}{fresh}

## Evaluation

{_evaluation_section(evaluation)}

## License

The original Tag2Text code is released under the Apache-2.0 license; this card's metadata uses `{license}`.
Check the original repository for the terms of the released weights.

## Citation

```bibtex
{CITATION}
```
"""
    return front_matter + "\n" + body


def evaluation_from_directory(directory) -> dict | None:
    """Evaluation numbers a training run left in ``directory`` (``eval_results.json`` or the ``eval_*``
    entries of ``all_results.json``), or None."""
    directory = Path(directory)
    for name in ("eval_results.json", "all_results.json"):
        path = directory / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            logger.warning("ignoring %s: not valid JSON (%s)", path, error)
            continue
        if not isinstance(data, dict):
            continue
        results = {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and (name == "eval_results.json" or k.startswith("eval_"))}
        runtime = ("runtime", "samples_per_second", "steps_per_second", "epoch")
        results = {k: v for k, v in results.items() if not k.endswith(runtime)}
        if results:
            return results
    return None


def card_for_directory(directory, repo_id: str | None = None) -> str:
    """A card for a saved model directory that has none (e.g. a training output), from its config.json and
    any evaluation results it holds."""
    from tag2text import Tag2TextConfig

    from .model_source import load_tagging_config, model_type, tagging_only_family

    directory = Path(directory)
    trained = (directory / "trainer_state.json").is_file() or (directory / "all_results.json").is_file()
    kind = model_type(str(directory))
    if tagging_only_family(kind):
        config = load_tagging_config(str(directory))
        source = ("Fine-tuned with `tag2text train --init-from` (transformers Trainer, the original's asymmetric "
                  "tagging loss); see `trainer_state.json` and `train_summary.json`." if trained
                  else "Saved with the `tag2text` package.")
        evaluation = evaluation_from_directory(directory)
        if evaluation:
            source += "\n\n" + _evaluation_section(evaluation)
        return render_ram_model_card(config, kind, source)
    config = Tag2TextConfig.from_pretrained(directory)
    if trained:
        source = "Trained or fine-tuned with the `tag2text` package (transformers Trainer); see `trainer_state.json`."
    else:
        source = None
    return render_model_card(config, repo_id=repo_id, source=source, evaluation=evaluation_from_directory(directory))


def render_ram_model_card(config, family: str, source: str) -> str:
    """The card of a RAM / RAM++ directory (``family``: ``"ram"`` or ``"ram_plus"``); ``source`` says where its
    weights and label space come from (conversion, open set, training)."""
    from .ram_checkpoint_mapping import FAMILY_NAMES, RAM, RAM_PLUS

    name = FAMILY_NAMES[family]
    thresholds = config.threshold_list()
    model_class = "RamForImageTagging" if family == RAM else "RamPlusForImageTagging"
    chinese = "yes" if config.tag_names_chinese is not None else "no"
    size = config.vision_config.image_size
    return f"""---
library_name: transformers
pipeline_tag: image-classification
license: apache-2.0
tags:
- image-tagging
- recognize-anything
- multi-label-classification
---

# {name} image tagging ({config.num_tags} tags)

{name} from [recognize-anything](https://github.com/xinyu1205/recognize-anything) as a transformers model
(`{model_class}`): Swin at {size} px, Query2Label tagging head over
{'CLIP tag-description' if family == RAM_PLUS else 'CLIP tag'} embeddings, one sigmoid per tag.

- tags: {config.num_tags} (`config.id2label`); Chinese names: {chinese} (`config.tag_names_chinese`)
- per-class thresholds (`config.class_thresholds`, a tag fires when its probability is strictly above):
  min {min(thresholds):g}, max {max(thresholds):g}

## Usage

```python
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

model = AutoModelForImageClassification.from_pretrained(DIRECTORY, trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained(DIRECTORY, trust_remote_code=True)
tags = model.tag(processor(images=image, return_tensors="pt")["pixel_values"])  # tags, tags_zh, scores
scores = pipeline("image-classification", model=DIRECTORY, trust_remote_code=True,
                  function_to_apply="sigmoid", top_k=None)(image)
```

## Source

{source}
"""

