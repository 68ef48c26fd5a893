"""Argument types and the usage-error convention of the ``tag2text`` command line.

Every subcommand uses these so that a bad option value is one line on stderr that names the option and the
value, with exit status 2 and no traceback:

- ``type=`` functions below reject a value while argparse parses it (argparse names the option);
- checks that need several options, or the file system, raise :class:`UsageError` from ``run(args)``;
  :func:`tag2text.hub.cli.main` prints it as ``tag2text COMMAND: error: MESSAGE`` and exits 2.

This module imports nothing heavy: it is loaded for ``--help``.
"""

from __future__ import annotations

import argparse
import math


class UsageError(Exception):
    """A bad command-line value found after parsing; the message names the option and the value."""


def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1] (thresholds)."""
    value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def int_at_least(minimum: int):
    """An ``type=`` for integers of at least ``minimum``."""

    def parse(text: str) -> int:
        value = _number(text, int)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"
    return parse
