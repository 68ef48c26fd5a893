"""Matrix products of the spaCy models through NumPy's BLAS, one thread at a time.

thinc multiplies matrices with its bundled BLIS by default. On the machines this project was
measured on (2-core AMD EPYC VMs), NumPy's OpenBLAS does the tok2vec and parser products about
twice as fast on one core, which cuts the whole caption pipeline's CPU time by about a third.
Parses are unchanged (same weights, same operations, only the summation order may differ): all
24,794 distinct COCO val2017 captions got identical tags, POS, heads, labels, lemmas and
morphology; benchmarks/tag_mining.py re-checks this on its captions.

OpenBLAS would start a thread per core for these small products and compete with our own worker
processes, so the miner holds it to one thread while it parses (:func:`single_threaded_blas`)
and restores the caller's setting afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

_SYMBOL_PREFIXES = ("openblas_", "scipy_openblas_")
_SYMBOL_SUFFIXES = ("", "64_")
_controls: list | None = None


def use_numpy_blas(nlp) -> int:
    """Route the matrix products of ``nlp``'s trainable components through NumPy.

    Returns the number of model nodes switched (0 if the pipeline has no thinc models).
    """
    from thinc.api import Model, NumpyOps

    ops = NumpyOps(use_blis=False)
    switched = 0
    for name in nlp.pipe_names:
        model = getattr(nlp.get_pipe(name), "model", None)
        if not isinstance(model, Model):
            continue
        for node in model.walk():
            # Only CPU NumPy ops are replaced; a pipeline moved to a GPU keeps its ops.
            if isinstance(node.ops, NumpyOps):
                node.ops = ops
                switched += 1
    return switched


def _openblas_controls() -> list:
    """(get, set) thread-count functions of every OpenBLAS loaded in this process (Linux)."""
    global _controls
    if _controls is not None:
        return _controls
    found = []
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/maps", encoding="utf-8") as maps:
                paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
        except OSError:
            paths = []
        for path in paths:
            try:
                library = ctypes.CDLL(path)
            except OSError:
                continue
            for prefix in _SYMBOL_PREFIXES:
                for suffix in _SYMBOL_SUFFIXES:
                    getter = getattr(library, f"{prefix}get_num_threads{suffix}", None)
                    setter = getattr(library, f"{prefix}set_num_threads{suffix}", None)
                    if getter is not None and setter is not None:
                        getter.restype = ctypes.c_int
                        setter.argtypes = [ctypes.c_int]
                        found.append((getter, setter))
    if not found:
        logger.debug("no OpenBLAS thread control found; BLAS threads are left as they are")
    _controls = found
    return found


@contextlib.contextmanager
def single_threaded_blas():
    """Hold every loaded OpenBLAS to one thread inside the ``with`` block."""
    controls = _openblas_controls()
    saved = [getter() for getter, _ in controls]
    for _, setter in controls:
        setter(1)
    try:
        yield
    finally:
        for (_, setter), threads in zip(controls, saved):
            setter(threads)
