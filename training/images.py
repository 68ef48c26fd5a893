"""Loading training images without silent failures: bad images are counted, logged and skipped, or stop
the run (``fail_fast``)."""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter

from PIL import Image

from ..image_loading import ImageInputError, to_rgb_image

logger = logging.getLogger(__name__)

# Log each failure kind in full for the first few images, then only count (a corrupt shard can hold
# thousands; the totals come in the summary).
_LOGGED_PER_KIND = 10


class BadImageError(RuntimeError):
    """An image could not be loaded and ``fail_fast`` is set; the message names the image."""


class ImageLoader:
    """Load images from paths, bytes, ``{"bytes", "path"}`` dicts or PIL images into RGB PIL images.

    Args:
        fail_fast: raise :class:`BadImageError` on the first missing or corrupt image instead of skipping.
        cache_megabytes: keep decoded images read from files, up to this many megabytes of pixels, and return
            them again instead of decoding the file each epoch (0: no cache). Images past the limit are
            decoded each time; nothing is evicted, so which images are cached does not depend on the order.

    Failures are counted by kind (``missing``, ``corrupt``) in :attr:`failures`; :meth:`summary` tells.
    Callers must not change a returned image in place (PIL's operations return new images): a cached one is
    returned again.
    """

    def __init__(self, fail_fast: bool = False, cache_megabytes: float = 0):
        if cache_megabytes < 0:
            raise ValueError(f"cache_megabytes must be at least 0, got {cache_megabytes}")
        self.fail_fast = fail_fast
        self.failures: Counter = Counter()
        self.examples: dict[str, list[str]] = {}
        self.loaded = 0
        self._lock = threading.Lock()
        self._cache_limit = int(cache_megabytes * 2**20)
        self._cache: dict[str, Image.Image] = {}
        self._cache_bytes = 0
        self.cache_hits = 0

    def load(self, source, name: str | None = None) -> Image.Image | None:
        """The RGB image, or None (after counting and logging) when it is missing or unreadable."""
        label = name or _describe(source)
        key = _file_key(source) if self._cache_limit else None
        if key is not None:
            cached = self._cache.get(key)
            if cached is not None:
                with self._lock:
                    self.loaded += 1
                    self.cache_hits += 1
                return cached
        try:
            if isinstance(source, dict):
                data, path = source.get("bytes"), source.get("path")
                source = data if data is not None else path
                if source is None:
                    raise ImageInputError("neither bytes nor path")
            image = to_rgb_image(source)  # paths, encoded bytes and PIL images alike
        except ImageInputError as error:
            kind = "missing" if isinstance(source, (str, os.PathLike)) and not os.path.exists(source) else "corrupt"
            self._fail(kind, label, error)
            return None
        with self._lock:
            self.loaded += 1
            if key is not None:
                size = len(image.getbands()) * image.width * image.height
                if self._cache_bytes + size <= self._cache_limit:
                    self._cache[key] = image
                    self._cache_bytes += size
        return image

    def _fail(self, kind: str, label: str, error: Exception) -> None:
        message = f"{kind} image {label}: {error}"
        if self.fail_fast:
            raise BadImageError(message + " (stopping because of --fail-on-bad-image)")
        with self._lock:
            self.failures[kind] += 1
            count = self.failures[kind]
            self.examples.setdefault(kind, [])
            if len(self.examples[kind]) < _LOGGED_PER_KIND:
                self.examples[kind].append(label)
        if count <= _LOGGED_PER_KIND:
            logger.warning("skipping %s", message)
        elif count == _LOGGED_PER_KIND + 1:
            logger.warning("more %s images are being skipped; only the totals are reported from now on", kind)

    @property
    def skipped(self) -> int:
        return sum(self.failures.values())

    def summary(self) -> dict:
        return {"loaded": self.loaded, "skipped": self.skipped, "cached_images": len(self._cache),
                "cache_hits": self.cache_hits, **{f"skipped_{k}": v for k, v in self.failures.items()},
                "examples": {k: list(v) for k, v in self.examples.items()}}


def _file_key(source) -> str | None:
    """The cache key of an image read from a file (a path, or a dict with a path and no bytes), else None."""
    if isinstance(source, dict):
        source = source.get("path") if source.get("bytes") is None else None
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else None


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    if isinstance(source, dict):
        return repr(source.get("path") or "<bytes>")
    return f"<{type(source).__name__}>"
