"""Tiny Tag2Text models, tokenizers and images built inside the tests (nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "|", ",", ".", "a", "picture", "of", "the", "on", "in", "with", "and", "two", "three",
    "red", "blue", "green", "yellow", "black", "white", "small", "large",
    "cat", "dog", "car", "bus", "tree", "grass", "sky", "man", "woman", "person", "bike", "street",
    "sitting", "riding", "running", "standing", "fire", "hydrant", "tennis", "racket",
    "##s", "##ing", "##ed",
]
TAGS = ["cat", "dog", "car", "bus", "tree", "grass", "sky", "man", "woman", "red", "blue", "green",
        "fire hydrant", "tennis racket", "riding", "two"]


def write_vocab(directory) -> str:
    path = f"{directory}/vocab.txt"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(SPECIAL + WORDS) + "\n")
    return path


def make_tokenizer(directory):
    from tag2text import build_tokenizer

    return build_tokenizer(write_vocab(directory))


def make_processor(tokenizer, image_size=32):
    from tag2text import Tag2TextImageProcessor, Tag2TextProcessor

    return Tag2TextProcessor(image_processor=Tag2TextImageProcessor(size=image_size), tokenizer=tokenizer)


def make_config(tokenizer, **overrides):
    from tag2text import preset_config

    overrides.setdefault("tag_names", list(TAGS))
    overrides.setdefault("caption_excluded_tag_ids", [TAGS.index("two")])
    return preset_config("tiny", tokenizer=tokenizer, **overrides)


def make_model(config, seed=0, cls=None, fire=(0, 5, 9, 15)):
    """A tiny model in eval mode; biases set so that the tags in ``fire`` fire and LayerNorms are perturbed
    (so that tests cannot pass on the identity-initialised norms)."""
    from tag2text import Tag2TextForCaptioning

    cls = cls or Tag2TextForCaptioning
    torch.manual_seed(seed)
    model = cls(config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("LayerNorm.weight") or name.endswith("layernorm_before.weight"):
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
            elif name.endswith(".bias") and param.dim() == 1 and "classifier" not in name:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
        bias = model.tagging_head.classifier_bias
        bias.fill_(-6.0)
        for index in fire:
            bias[index] = 6.0
    return model.eval()


def draw_image(seed=0, size=(48, 40), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    array[: size[1] // 2, : size[0] // 2] = [220, 30, 30]
    image = Image.fromarray(array, mode="RGB")
    return image if mode == "RGB" else image.convert(mode)
