"""One image input to one RGB image, and an RGB image to the model's pixels: the conversion every entry point shares.

The PyTorch processor, the ONNX runtime (``tag2text.onnx``, which has neither torch nor transformers), the
server's uploads, dataset annotation and the training data loader all read images through :func:`to_rgb_image`,
so that one file gives the same pixels everywhere:

- file paths, encoded bytes, PIL images in any mode, numpy arrays (H, W[, 1|3|4] or channels first) and tensors
  (anything with ``detach`` and ``numpy``; torch is never imported here);
- EXIF orientation applied; palette images through RGBA (their transparency); 16-bit and 32-bit greyscale scaled
  to 8 bits instead of PIL's clipping at 255; CMYK and the other modes by PIL's conversion;
- every failure is an :class:`ImageInputError` (a ``ValueError``) whose one-line message names the input and the
  reason (``image 1 ('broken.jpg'): not a readable image (...)``).

:func:`pixel_array` (one image) and :func:`pixel_arrays` (a batch) are the processor's resize, rescale and
normalisation, shared the same way.

Part of the Hub payload of the processor (a single-dot sibling of ``image_processing_tag2text``): imports only the
standard library, numpy and PIL.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

RESAMPLE_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

# Modes whose values PIL's convert("RGB") clips at 255 (16-bit and 32-bit integers, 32-bit floats).
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_BYTES = (bytes, bytearray, memoryview)
# What PIL raises on a file it cannot decode (a truncated file is an OSError, some plugins raise the others).
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError)


class ImageInputError(ValueError):
    """An input could not be turned into an RGB image; the message names the input and the reason."""


def describe(item, index: int = 0) -> str:
    """How error messages name an input: ``image 0 ('photo.jpg')``, ``image 2 (ndarray)``, ``image 1 (512 bytes)``."""
    if isinstance(item, (str, os.PathLike)):
        return f"image {index} ({os.fspath(item)!r})"
    if isinstance(item, _BYTES):
        return f"image {index} ({len(item)} bytes)"
    return f"image {index} ({type(item).__name__})"


def to_rgb_image(item, index: int = 0) -> Image.Image:
    """An RGB PIL image, EXIF orientation applied, from a path, encoded bytes, a PIL image, an array or a tensor.

    ``index`` is the input's position in its batch, for the error message. Raises :class:`ImageInputError`.
    """
    label = describe(item, index)
    if isinstance(item, (str, os.PathLike)):
        if not Path(item).is_file():
            raise ImageInputError(f"{label}: no such file")
        image = _decode(item, label)
    elif isinstance(item, _BYTES):
        image = _decode(io.BytesIO(bytes(item)), label)
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
        raise ImageInputError(f"{label}: expected a file path, image bytes, a PIL image, a numpy array or a tensor")
    try:
        if image.mode in _WIDE_MODES:
            return _wide_to_rgb(image)
        if image.mode == "RGB":
            return image
        if image.mode == "P":
            # Palette transparency given per entry converts to RGB only with a warning; through RGBA it is
            # silent, with the same colours.
            image = image.convert("RGBA")
        return image.convert("RGB")
    except (OSError, ValueError) as error:
        raise ImageInputError(f"{label}: cannot convert mode {image.mode!r} to RGB ({error})") from error


def _decode(source, label: str) -> Image.Image:
    """The decoded image of a file or a byte stream, upright; the file is closed after."""
    try:
        with Image.open(source) as opened:
            # A copy, turned by the file's EXIF orientation (read from the file itself, which holds a TIFF's
            # tags), with the orientation tag removed so that converting the result again does not turn it again.
            return ImageOps.exif_transpose(opened)
    except UnidentifiedImageError as error:  # its text names the stream object (a memory address for bytes)
        raise ImageInputError(f"{label}: not a readable image (no image format recognised)") from error
    except _DECODE_ERRORS as error:
        raise ImageInputError(f"{label}: not a readable image ({error})") from error


class ImageTooLargeError(ImageInputError):
    """An image refused by its header, before decoding: ``width`` x ``height`` is above the caller's pixel limit,
    or (``width`` and ``height`` None) above PIL's decompression-bomb limit, with PIL's error as the cause."""

    def __init__(self, message: str, width: int | None = None, height: int | None = None):
        super().__init__(message)
        self.width, self.height = width, height


def open_within_pixels(source, max_pixels: int, label: str = "image") -> Image.Image:
    """An image file or byte stream opened, its header read and its pixels not yet decoded, when its width x
    height is at most ``max_pixels``: the one header check of every entry point that takes images from outside
    (dataset annotation, the server's uploads), so a decompression bomb costs nothing. The limit is the
    caller's, not PIL's process-wide ``Image.MAX_IMAGE_PIXELS`` (which still refuses anything above twice its
    value). Close the result (a ``with`` block).

    Raises:
        ImageTooLargeError: over ``max_pixels``, or over PIL's own limit.
        ImageInputError: not an image PIL can open; the cause is PIL's error.
    """
    try:
        opened = Image.open(source)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{label}: refused as a decompression bomb ({error})") from error
    except _DECODE_ERRORS as error:
        raise ImageInputError(f"{label}: not a readable image ({error})") from error
    width, height = opened.size
    if width * height > max_pixels:
        opened.close()
        raise ImageTooLargeError(f"{label}: {width}x{height} = {width * height} pixels, over the limit of "
                                 f"{max_pixels}", width, height)
    return opened


def _apply_exif(image: Image.Image, exif) -> Image.Image:
    if exif and exif.get(0x0112, 1) != 1:
        return ImageOps.exif_transpose(image)
    return image


def _wide_to_rgb(image: Image.Image) -> Image.Image:
    # Scaled to 8 bits: 16-bit values by 1/257 (65535 -> 255), larger integers by their maximum, floats by range.
    array = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        array = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    elif array.max(initial=0) > 255:
        array = array / 257.0 if array.max() <= 65535 else array / array.max() * 255.0
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L").convert("RGB")


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


def pixel_array(image: Image.Image, height: int, width: int, resample: str = "bilinear",
                rescale_factor: float | None = 1 / 255, image_mean=None, image_std=None) -> np.ndarray:
    """(3, height, width) float32 pixels of an RGB image: resized (aspect ratio not kept), multiplied by
    ``rescale_factor`` (None: not rescaled), then normalised by ``image_mean`` / ``image_std`` (None: not)."""
    return pixel_arrays([image], height, width, resample, rescale_factor, image_mean, image_std)[0]


def pixel_arrays(images, height: int, width: int, resample: str = "bilinear",
                 rescale_factor: float | None = 1 / 255, image_mean=None, image_std=None) -> np.ndarray:
    """(batch, 3, height, width) float32: :func:`pixel_array` of each RGB image, with the arithmetic done once
    on the stacked 8-bit pixels (the same float32 operations per value, so the same values; the training
    collator calls this every step)."""
    if resample not in RESAMPLE_FILTERS:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE_FILTERS)}, got {resample!r}")
    stacked = np.stack([np.asarray(image.resize((width, height), resample=RESAMPLE_FILTERS[resample]))
                        for image in images])
    array = stacked.astype(np.float32)
    if rescale_factor is not None:
        array /= np.float32(1.0 / rescale_factor)  # 1/255 divides by 255 exactly, as released
    if image_mean is not None:
        array -= np.asarray(image_mean, dtype=np.float32)
        array /= np.asarray(image_std, dtype=np.float32)
    return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
