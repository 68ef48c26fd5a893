"""Image preprocessing of Tag2Text inference: square resize (bilinear), scale to [0, 1], ImageNet mean/std.

It accepts PIL images in any mode, file paths and numpy arrays / torch tensors, applies EXIF orientation,
and raises an error that names the offending input. It has no torchvision dependency (a broken torchvision
beside a CPU torch disables transformers' stock image processors).

Part of the Hub payload of the processor: imports only the standard library, numpy, PIL and transformers.
"""


import os
from pathlib import Path
from typing import TypedDict

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImageInputError(ValueError):
    """An input could not be turned into an RGB image; the message names the input."""


def _describe(item, index) -> str:
    if isinstance(item, (str, os.PathLike)):
        return f"image {index} ({os.fspath(item)!r})"
    return f"image {index} ({type(item).__name__})"


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    # PIL's convert("RGB") clips 16-bit and 32-bit values at 255; scale to 8 bits first.
    array = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        array = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    elif array.max(initial=0) > 255:
        array = array / 257.0 if array.max() <= 65535 else array / array.max() * 255.0
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L").convert("RGB")


def to_rgb_image(item, index: int = 0) -> Image.Image:
    """Load or convert one input to an RGB PIL image with EXIF orientation applied."""
    label = _describe(item, index)
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise ImageInputError(f"{label}: no such file")
        try:
            with Image.open(path) as opened:
                opened.load()
                image = opened.copy() if opened.mode != "P" else opened.convert("RGBA")
                image.info.update(opened.info)
                exif = opened.getexif()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
            raise ImageInputError(f"{label}: not a readable image ({error})") from error
        image = _apply_exif(image, exif)
    elif isinstance(item, Image.Image):
        try:
            image = _apply_exif(item, item.getexif())
        except OSError as error:
            raise ImageInputError(f"{label}: unreadable image data ({error})") from error
    elif hasattr(item, "detach") and hasattr(item, "numpy"):
        image = _array_to_image(item.detach().cpu().numpy(), label)
    elif isinstance(item, np.ndarray):
        image = _array_to_image(item, label)
    else:
        raise ImageInputError(f"{label}: expected a file path, a PIL image, a numpy array or a tensor")
    try:
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            return _sixteen_bit_to_rgb(image)
        if image.mode == "RGB":
            return image
        return image.convert("RGB")
    except (OSError, ValueError) as error:
        raise ImageInputError(f"{label}: cannot convert mode {image.mode!r} to RGB ({error})") from error


def _apply_exif(image: Image.Image, exif) -> Image.Image:
    if exif and exif.get(0x0112, 1) != 1:
        return ImageOps.exif_transpose(image)
    return image


def _array_to_image(array: np.ndarray, label: str) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.transpose(array, (1, 2, 0))  # channels first -> last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageInputError(f"{label}: array of shape {array.shape} is not an image (H, W[, 1|3|4])")
    if array.size == 0:
        raise ImageInputError(f"{label}: empty array")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageInputError(f"{label}: array holds NaN or infinite values")
        scale = 255.0 if array.max() <= 1.0 and array.min() >= 0.0 else 1.0
        array = np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
    elif array.dtype == np.uint16:
        array = np.rint(array / 257.0).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        if array.min() < 0 or array.max() > 255:
            raise ImageInputError(f"{label}: integer array values outside [0, 255] ({array.dtype})")
        array = array.astype(np.uint8)
    return Image.fromarray(array)


class Tag2TextImagesKwargs(TypedDict, total=False):
    """What :class:`Tag2TextImageProcessor` takes at call time (each overrides the attribute of that name)."""

    size: int | dict | None
    resample: str | None
    do_rescale: bool | None
    rescale_factor: float | None
    do_normalize: bool | None
    image_mean: list | tuple | None
    image_std: list | tuple | None
    return_tensors: str | None


def _side(size) -> tuple[int, int]:
    """(height, width) of a ``size`` given as an int (square) or as ``{"height", "width"}`` /
    ``{"shortest_edge"}``."""
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            height, width = size["height"], size["width"]
        elif "shortest_edge" in size:
            height = width = size["shortest_edge"]
        else:
            raise ValueError(f"size must be an int or a dict with height and width, got {size!r}")
    else:
        height = width = size
    if isinstance(height, bool) or not isinstance(height, int) or not isinstance(width, int) or min(height, width) < 1:
        raise ValueError(f"size must be a positive int or height/width of positive ints, got {size!r}")
    return int(height), int(width)


class Tag2TextImageProcessor(BaseImageProcessor):
    """Resize to ``size`` x ``size`` (ignoring aspect ratio), scale by 1/255, normalise.

    Args:
        size: output side in pixels (384 for the released model), or ``{"height": h, "width": w}``.
        resample: ``"bilinear"`` (released inference), ``"bicubic"``, ``"nearest"`` or ``"lanczos"``.
        do_rescale: multiply the 8-bit values by ``rescale_factor`` (True; 1/255 maps them to [0, 1]).
        do_normalize: subtract ``image_mean`` and divide by ``image_std`` (True).
        image_mean / image_std: normalisation (ImageNet for the released inference).

    Each of these can also be given at call time (``processor(images=..., size=224, do_normalize=False)``);
    any other keyword is an error.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = Tag2TextImagesKwargs

    def __init__(self, size: int = 384, resample: str = "bilinear", image_mean=None, image_std=None,
                 do_rescale: bool = True, do_normalize: bool = True, rescale_factor: float = 1 / 255, **kwargs):
        super().__init__(**kwargs)
        if isinstance(size, dict):
            height, width = _side(size)
            size = height if height == width else {"height": height, "width": width}
        else:
            _side(size)
        if resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {resample!r}")
        self.size = size
        self.resample = resample
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = list(image_mean if image_mean is not None else IMAGENET_MEAN)
        self.image_std = list(image_std if image_std is not None else IMAGENET_STD)

    def load_images(self, images) -> list[Image.Image]:
        """RGB PIL images from one input or a list of inputs (paths, PIL images, arrays, tensors)."""
        if images is None:
            raise ImageInputError("images is None")
        if isinstance(images, (list, tuple)):
            images = list(images)
        elif getattr(images, "ndim", None) == 4:
            images = list(images)
        else:
            images = [images]
        if not images:
            raise ImageInputError("no images were given")
        return [to_rgb_image(item, index) for index, item in enumerate(images)]

    def pixel_array(self, image: Image.Image, size=None, resample=None, do_rescale=None, do_normalize=None,
                    image_mean=None, image_std=None, rescale_factor=None) -> np.ndarray:
        """(3, height, width) float32 array of one RGB image; arguments left None take the attributes."""
        height, width = _side(self.size if size is None else size)
        resample = self.resample if resample is None else resample
        if resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {resample!r}")
        resized = image.resize((width, height), resample=_RESAMPLE[resample])
        array = np.asarray(resized, dtype=np.float32)
        if self.do_rescale if do_rescale is None else do_rescale:
            factor = self.rescale_factor if rescale_factor is None else rescale_factor
            array = array / np.float32(1.0 / factor)  # 1/255 divides by 255 exactly, as released
        if self.do_normalize if do_normalize is None else do_normalize:
            mean = np.asarray(self.image_mean if image_mean is None else image_mean, dtype=np.float32)
            std = np.asarray(self.image_std if image_std is None else image_std, dtype=np.float32)
            array = (array - mean) / std
        return array.transpose(2, 0, 1)

    def preprocess(self, images, return_tensors=None, **kwargs) -> BatchFeature:
        unknown = sorted(set(kwargs) - set(Tag2TextImagesKwargs.__annotations__))
        if unknown:
            raise TypeError(
                f"Tag2TextImageProcessor got unsupported argument(s) {unknown}; it takes "
                f"{sorted(set(Tag2TextImagesKwargs.__annotations__))}"
            )
        pixels = np.stack([self.pixel_array(image, **kwargs) for image in self.load_images(images)])
        return BatchFeature(data={"pixel_values": pixels}, tensor_type=return_tensors)

    def __call__(self, images, return_tensors=None, **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)
