"""Package attributes that load on first use, shared by every ``__init__`` of ``tag2text``.

A package lists ``{public name: module}`` and gets the module-level ``__getattr__`` and ``__dir__`` (PEP 562)
that import the module when the name is first read and keep the value in the package, so that importing a
package costs nothing and ``tag2text --help`` never pays for torch or transformers.

Standard library only; not part of the Hub payload (a saved model directory does not need it).
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Mapping


def lazy_exports(module: str, exports: Mapping[str, str], on_load: Callable[[str], None] | None = None):
    """``(__getattr__, __dir__)`` for the package or module named ``module`` (its ``__name__``).

    Args:
        exports: public name -> module that defines it, relative to the package that ``module`` is or is in
            (``".configuration_tag2text"``, ``"..image_loading"``), or absolute.
        on_load: called with the name after its first load (``tag2text`` registers its Auto classes there).
    """

    def __getattr__(name: str):
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(target, sys.modules[module].__package__), name)
        if on_load is not None:
            on_load(name)
        vars(sys.modules[module])[name] = value  # later reads are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[module])) | set(exports))

    return __getattr__, __dir__
