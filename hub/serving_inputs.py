"""Request checks of ``tag2text serve``: decode an uploaded image safely and validate the request options.

Everything here raises :class:`RequestError`, whose status and message become the HTTP answer, so that a bad
request is a 4xx that names the field and the value and never takes the server down. No torch, no web
framework: the HTTP app and the Gradio page share these checks.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass

from PIL import Image

from ..training.option_values import parse_number

# Fields each endpoint accepts; anything else is an error rather than silently ignored.
CAPTION_FIELDS = ("image", "tags", "threshold", "num_beams", "max_new_tokens")
TAG_FIELDS = ("image", "threshold")


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx) and a message naming the problem."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one request may ask for: the pixel limit of an image and the largest generation options."""

    max_image_pixels: int
    max_num_beams: int
    max_new_tokens: int


@dataclass(frozen=True)
class RequestOptions:
    """Validated options of one request; None means the model's default."""

    tags: tuple[str, ...] | str | None = None
    threshold: float | None = None
    num_beams: int | None = None
    max_new_tokens: int | None = None


def decode_image(data: bytes, max_pixels: int, field: str = "image") -> Image.Image:
    """An RGB PIL image from uploaded bytes, refused before decoding when its header is over ``max_pixels``
    (:func:`tag2text.image_loading.open_within_pixels`, this request's limit) and converted by
    :func:`tag2text.image_loading.to_rgb_image`, the CLI's conversion.
    """
    from tag2text.image_loading import ImageInputError, ImageTooLargeError, open_within_pixels, to_rgb_image

    if not data:
        raise RequestError(400, f"field {field!r} is empty (0 bytes)")
    try:
        opened = open_within_pixels(io.BytesIO(data), max_pixels)
    except ImageTooLargeError as error:
        if error.width is None:
            raise RequestError(413, f"field {field!r}: image refused as a decompression bomb "
                                    f"({error.__cause__})") from error
        raise RequestError(
            413, f"field {field!r}: image is {error.width}x{error.height} = {error.width * error.height} pixels, "
                 f"over the server's limit of {max_pixels} (--max-image-pixels)") from error
    except ImageInputError as error:
        raise RequestError(400, f"field {field!r} is not a readable image ({error.__cause__})") from error
    width, height = opened.size
    if width < 1 or height < 1:
        raise RequestError(400, f"field {field!r}: image has no pixels ({width}x{height})")
    try:
        opened.load()
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        # e.g. "image file is truncated": PIL's LOAD_TRUNCATED_IMAGES stays off, a cut-off file is an error.
        raise RequestError(400, f"field {field!r}: image data is truncated or corrupt ({error})") from error
    try:
        return to_rgb_image(opened)
    except ImageInputError as error:
        raise RequestError(400, f"field {field!r}: {error}") from error


def decode_base64(text, field: str = "image") -> bytes:
    """Bytes of a base64 string, with or without a ``data:...;base64,`` prefix."""
    if not isinstance(text, str):
        raise RequestError(400, f"field {field!r} must be a base64 string, got {type(text).__name__}")
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise RequestError(400, f"field {field!r}: data URL is not base64 ({header[:40]!r})")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(400, f"field {field!r} is not valid base64 ({error})") from error


def check_fields(fields, allowed) -> None:
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise RequestError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; this endpoint takes "
                                f"{', '.join(allowed)}")
    if "image" not in fields:
        raise RequestError(400, "missing field 'image' (an image file, or base64 in JSON)")


def _number(name: str, value, kind, low=None, high=None):
    """``value`` as ``kind`` in ``[low, high]``, from JSON (a number) or a form (a string), read by the one number
    parser of the project; its message is given as this field's (``field 'x' must be ...``)."""
    # JSON's true/false are ints to Python, and a list or object is no number: refused before parsing.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RequestError(400, f"field {name!r} must be {'an integer' if kind is int else 'a number'}, "
                                f"got {value!r}")
    try:
        return parse_number(value.strip() if isinstance(value, str) else value, kind, at_least=low, at_most=high)
    except ValueError as error:
        message = str(error)
        if message.startswith("expected "):
            message = "must be " + message[len("expected "):]
        raise RequestError(400, f"field {name!r} {message}") from None


def _tags(value):
    """A ``"a | b"`` string or a list of names; empty means "use the predicted tags"."""
    if isinstance(value, str):
        return value if value.strip(" |") else None
    if isinstance(value, (list, tuple)):
        if not all(isinstance(item, str) for item in value):
            raise RequestError(400, "field 'tags' must be a string like \"dog | grass\" or a list of strings")
        names = tuple(item.strip() for item in value if item.strip())
        return names or None
    raise RequestError(400, f"field 'tags' must be a string or a list of strings, got {type(value).__name__}")


def parse_options(fields: dict, allowed, limits: Limits) -> RequestOptions:
    """Validated options from a request's fields (JSON values or form strings), image excluded."""
    check_fields(fields, allowed)
    options = {}
    if fields.get("threshold") is not None:
        options["threshold"] = _number("threshold", fields["threshold"], float, 0, 1)
    if fields.get("num_beams") is not None:
        options["num_beams"] = _number("num_beams", fields["num_beams"], int, 1, limits.max_num_beams)
    if fields.get("max_new_tokens") is not None:
        options["max_new_tokens"] = _number("max_new_tokens", fields["max_new_tokens"], int, 1,
                                            limits.max_new_tokens)
    if fields.get("tags") is not None:
        options["tags"] = _tags(fields["tags"])
    return RequestOptions(**options)
