"""Image preprocessing of Tag2Text inference: square resize (bilinear), scale to [0, 1], ImageNet mean/std.

It accepts file paths, image bytes, PIL images in any mode, numpy arrays and torch tensors; turning them into RGB
images (EXIF orientation, 16-bit scaling, errors naming the input) and the pixel arithmetic are
:mod:`image_loading`'s, which the ONNX runtime shares. It has no torchvision dependency (a broken torchvision
beside a CPU torch disables transformers' stock image processors).

Part of the Hub payload of the processor: imports only the standard library, numpy, PIL, transformers and its
single-dot sibling ``image_loading``.
"""


from typing import TypedDict

import numpy as np
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

from .version_compat import SUPPORTED_TRANSFORMERS  # noqa: F401  (first: an unsupported release stops here)
from .image_loading import RESAMPLE_FILTERS, ImageInputError, pixel_arrays, to_rgb_image

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


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
        if resample not in RESAMPLE_FILTERS:
            raise ValueError(f"resample must be one of {sorted(RESAMPLE_FILTERS)}, got {resample!r}")
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

    def pixel_array(self, image: Image.Image, **kwargs) -> np.ndarray:
        """(3, height, width) float32 array of one RGB image; arguments left None take the attributes."""
        return self.pixel_arrays([image], **kwargs)[0]

    def pixel_arrays(self, images, size=None, resample=None, do_rescale=None, do_normalize=None, image_mean=None,
                     image_std=None, rescale_factor=None) -> np.ndarray:
        """(batch, 3, height, width) float32 array of RGB images; arguments left None take the attributes."""
        height, width = _side(self.size if size is None else size)
        rescale = self.do_rescale if do_rescale is None else do_rescale
        normalize = self.do_normalize if do_normalize is None else do_normalize
        return pixel_arrays(
            images, height, width,
            resample=self.resample if resample is None else resample,
            rescale_factor=(self.rescale_factor if rescale_factor is None else rescale_factor) if rescale else None,
            image_mean=(self.image_mean if image_mean is None else image_mean) if normalize else None,
            image_std=(self.image_std if image_std is None else image_std) if normalize else None,
        )

    def preprocess(self, images, return_tensors=None, **kwargs) -> BatchFeature:
        unknown = sorted(set(kwargs) - set(Tag2TextImagesKwargs.__annotations__))
        if unknown:
            raise TypeError(
                f"Tag2TextImageProcessor got unsupported argument(s) {unknown}; it takes "
                f"{sorted(set(Tag2TextImagesKwargs.__annotations__))}"
            )
        pixels = self.pixel_arrays(self.load_images(images), **kwargs)
        return BatchFeature(data={"pixel_values": pixels}, tensor_type=return_tensors)

    def __call__(self, images, return_tensors=None, **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)
