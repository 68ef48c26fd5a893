"""Training-time image augmentation as released (BLIP's ``RandomAugment``), with PIL and numpy only.

Released pipeline (``ram/data/__init__.py``): ``RandomResizedCrop(size, scale=(0.2, 1.0), bicubic)``,
``RandomHorizontalFlip()``, ``RandomAugment(2, 5, isPIL=True, augs=[...])``. torchvision is deliberately not
used: a torchvision that does not match the installed torch disables transformers' image processors.

Every random choice comes from a ``numpy.random.Generator`` that the caller seeds per sample (from the run
seed, the epoch and the sample index), so a resumed run augments exactly as an uninterrupted one.

The output is a PIL image of ``size x size``; the processor then scales and normalises it exactly as at
inference (the release normalised with CLIP statistics in training but ImageNet statistics at inference;
here both use the processor's, so the model sees the same statistics in training and use).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

BICUBIC = Image.Resampling.BICUBIC

# BLIP's RandomAugment op list (its 'Identity' is a no-op draw) with magnitude scaled from 0..10.
RANDAUG_OPS = (
    "identity", "autocontrast", "equalize", "brightness", "sharpness",
    "shear_x", "shear_y", "translate_x", "translate_y", "rotate",
)
_MAX_LEVEL = 10.0


@dataclasses.dataclass
class AugmentationConfig:
    """Switches of the training augmentation (defaults: as released).

    Args:
        enabled: False turns every augmentation off (the image is only resized by the processor).
        crop_scale: area range of ``RandomResizedCrop``; None disables cropping.
        crop_ratio: aspect-ratio range of the crop.
        horizontal_flip: flip with probability 0.5. Turn it off for data whose captions say left/right.
        randaug_num_ops: RandAugment ops per image (each applied with probability 0.5, as BLIP).
        randaug_magnitude: 0..10.
        randaug_ops: the op names to draw from (a subset of ``RANDAUG_OPS``).
    """

    enabled: bool = True
    crop_scale: tuple[float, float] | None = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    horizontal_flip: bool = True
    randaug_num_ops: int = 2
    randaug_magnitude: float = 5.0
    randaug_ops: tuple[str, ...] = RANDAUG_OPS

    def __post_init__(self):
        if self.crop_scale is not None:
            low, high = self.crop_scale
            if not 0 < low <= high <= 1:
                raise ValueError(f"crop_scale {self.crop_scale} must satisfy 0 < low <= high <= 1")
        unknown = [op for op in self.randaug_ops if op not in RANDAUG_OPS]
        if unknown:
            raise ValueError(f"unknown RandAugment ops {unknown}; choose from {RANDAUG_OPS}")
        if not 0 <= self.randaug_magnitude <= _MAX_LEVEL:
            raise ValueError(f"randaug_magnitude must be in [0, 10], got {self.randaug_magnitude}")
        if self.randaug_num_ops < 0:
            raise ValueError(f"randaug_num_ops must be >= 0, got {self.randaug_num_ops}")

    @classmethod
    def disabled(cls) -> "AugmentationConfig":
        return cls(enabled=False)


def random_resized_crop_box(width: int, height: int, scale, ratio, rng: np.random.Generator):
    """torchvision's RandomResizedCrop box sampling: 10 tries at a random area and aspect ratio, then a
    centre crop clamped to the allowed ratios. Returns (left, top, crop width, crop height)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _affine(image: Image.Image, matrix) -> Image.Image:
    # Fill uncovered pixels with grey (128), as BLIP's RandomAugment does.
    return image.transform(image.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR,
                           fillcolor=(128, 128, 128))


def apply_op(image: Image.Image, op: str, magnitude: float, rng: np.random.Generator) -> Image.Image:
    """One RandAugment op at ``magnitude`` (0..10) with a random sign where the op has one."""
    level = magnitude / _MAX_LEVEL
    sign = -1.0 if rng.random() < 0.5 else 1.0
    if op == "identity":
        return image
    if op == "autocontrast":
        return ImageOps.autocontrast(image)
    if op == "equalize":
        return ImageOps.equalize(image)
    if op == "brightness":
        return ImageEnhance.Brightness(image).enhance(1.0 + sign * 0.9 * level)
    if op == "sharpness":
        return ImageEnhance.Sharpness(image).enhance(1.0 + sign * 0.9 * level)
    if op == "shear_x":
        return _affine(image, (1, sign * 0.3 * level, 0, 0, 1, 0))
    if op == "shear_y":
        return _affine(image, (1, 0, 0, sign * 0.3 * level, 1, 0))
    if op == "translate_x":
        return _affine(image, (1, 0, sign * 0.3 * level * image.width, 0, 1, 0))
    if op == "translate_y":
        return _affine(image, (1, 0, 0, 0, 1, sign * 0.3 * level * image.height))
    if op == "rotate":
        return image.rotate(sign * 30.0 * level, resample=Image.Resampling.BILINEAR, fillcolor=(128, 128, 128))
    raise ValueError(f"unknown augmentation op {op!r}")


class TrainAugmentation:
    """Callable ``(PIL image, numpy Generator) -> PIL image`` implementing :class:`AugmentationConfig`."""

    def __init__(self, size: int, config: AugmentationConfig | None = None):
        if size < 1:
            raise ValueError(f"augmentation size must be positive, got {size}")
        self.size = int(size)
        self.config = config or AugmentationConfig()

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        config = self.config
        if not config.enabled:
            return image
        image = image.convert("RGB")
        if config.crop_scale is not None:
            left, top, w, h = random_resized_crop_box(image.width, image.height, config.crop_scale,
                                                      config.crop_ratio, rng)
            image = image.resize((self.size, self.size), BICUBIC, box=(left, top, left + w, top + h))
        if config.horizontal_flip and rng.random() < 0.5:
            image = ImageOps.mirror(image)
        for _ in range(config.randaug_num_ops):
            op = config.randaug_ops[int(rng.integers(len(config.randaug_ops)))]
            if rng.random() < 0.5:  # BLIP applies each drawn op with probability 0.5
                image = apply_op(image, op, config.randaug_magnitude, rng)
        return image

    def __repr__(self) -> str:
        return f"TrainAugmentation(size={self.size}, config={self.config})"
