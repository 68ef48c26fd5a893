"""Mapping variant tag strings to the canonical ones of a tag list ("bike" -> "bicycle")."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .tag_types import TAG_TYPES, check_tag_type


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


class SynonymMap:
    """Variant -> canonical tag, for all types or per type.

    Accepted mappings:

    * flat: ``{"bike": "bicycle", "tennis racket": "tennis racquet"}`` applies to every type;
    * per type: ``{"object": {"bike": "bicycle"}, "action": {"hop": "jump"}}``;
      a per-type entry wins over a flat one.

    Keys and values are lower-cased and whitespace-normalised. A mapping is applied once (no
    chains), so ``a -> b, b -> c`` maps ``a`` to ``b``.
    """

    def __init__(self, mapping: dict | None = None, *, source: str = "synonyms"):
        self._all: dict[str, str] = {}
        self._typed: dict[str, dict[str, str]] = {t: {} for t in TAG_TYPES}
        for key, value in (mapping or {}).items():
            if isinstance(value, dict):
                tag_type = check_tag_type(key, f"{source}: per-type section name")
                for variant, canonical in value.items():
                    self._typed[tag_type][self._key(variant, source)] = self._value(canonical, variant, source)
            else:
                self._all[self._key(key, source)] = self._value(value, key, source)

    @staticmethod
    def _key(variant, source: str) -> str:
        if not isinstance(variant, str) or not variant.strip():
            raise ValueError(f"{source}: a synonym must be a non-empty string, got {variant!r}")
        return _normalise(variant)

    @staticmethod
    def _value(canonical, variant, source: str) -> str:
        if not isinstance(canonical, str) or not canonical.strip():
            raise ValueError(f"{source}: the canonical tag for {variant!r} must be a non-empty string, got {canonical!r}")
        return _normalise(canonical)

    def __len__(self) -> int:
        return len(self._all) + sum(len(m) for m in self._typed.values())

    def __bool__(self) -> bool:
        return len(self) > 0

    def canonical(self, tag: str, tag_type: str) -> str:
        """The canonical form of ``tag`` (of type ``tag_type``), or ``tag`` itself."""
        typed = self._typed.get(tag_type)
        if typed and tag in typed:
            return typed[tag]
        return self._all.get(tag, tag)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "SynonymMap":
        """Read a synonym file.

        ``.json``: an object as described in the class docstring. Any other extension: text
        with one ``variant<TAB>canonical`` or ``variant<TAB>canonical<TAB>type`` per line;
        blank lines and lines starting with ``#`` are ignored.

        Raises:
            FileNotFoundError: no such file.
            ValueError: a malformed entry; the message names the file and line.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"synonym file not found: {path}")
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: not valid JSON ({err})") from err
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected a JSON object mapping variants to tags, got {type(data).__name__}")
            return cls(data, source=str(path))
        mapping: dict = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = [p.strip() for p in line.split("\t")]
            where = f"{path}:{number}"
            if len(parts) == 2:
                mapping[parts[0]] = parts[1]
            elif len(parts) == 3:
                check_tag_type(parts[2], f"{where}: third column")
                mapping.setdefault(parts[2], {})[parts[0]] = parts[1]
            else:
                raise ValueError(f"{where}: expected 'variant<TAB>canonical[<TAB>type]', got {line!r}")
        return cls(mapping, source=str(path))

    @classmethod
    def coerce(cls, value) -> "SynonymMap":
        """Accept ``None``, a mapping, a path, or a :class:`SynonymMap`."""
        if value is None:
            return cls()
        if isinstance(value, SynonymMap):
            return value
        if isinstance(value, dict):
            return cls(value)
        if isinstance(value, (str, os.PathLike)):
            return cls.from_file(value)
        raise TypeError(f"synonyms must be a dict, a file path or a SynonymMap, got {type(value).__name__}")
