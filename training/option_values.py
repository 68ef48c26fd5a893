"""Values users give: the one parser of numbers (command-line options, training arguments, form fields) and
the range checks of the training argument dataclasses.

Below the command line (``tag2text.hub.cli_args`` builds its argparse types on :func:`parse_number`) because the
training arguments check their values with it too; standard library only.
"""

from __future__ import annotations

import math


def parse_number(text, kind=float, *, at_least=None, above=None, at_most=None, below=None):
    """``kind(text)``, finite and in range; ``text`` may be a string or already a number.

    Raises:
        ValueError: a message that quotes the value and says what was expected (``expected an integer, got
            'x'``, ``must be at least 1, got 0``); callers prefix the option or field name.
    """
    if kind is int and isinstance(text, float) and not text.is_integer():
        raise ValueError(f"expected an integer, got {text!r}")  # int() would drop the fraction silently
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {text!r}")
    if at_least is not None and at_most is not None and not at_least <= value <= at_most:
        raise ValueError(f"must be between {at_least} and {at_most}, got {text}")
    if at_least is not None and value < at_least:
        raise ValueError(f"must be at least {at_least}, got {text}")
    if above is not None and value <= above:
        raise ValueError(f"must be above {above}{'' if at_most is None else f' and at most {at_most}'}, got {text}")
    if at_most is not None and value > at_most:
        raise ValueError(f"must be at most {at_most}, got {text}")
    if below is not None and value >= below:
        raise ValueError(f"must be below {below}, got {text}")
    return value


class TrainingArgumentError(ValueError):
    """A training option value, or a combination of them, that cannot be used; the message names the option."""


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_bounds(arguments, bounds: dict) -> None:
    """Raise :class:`TrainingArgumentError` for a field of ``arguments`` (set, not None) outside its bounds
    (``{"kind": int, "at_least": 1, ...}``, see :func:`parse_number`)."""
    for name, rule in bounds.items():
        value = getattr(arguments, name)
        if value is None:
            continue
        rule = dict(rule)
        try:
            parse_number(value, rule.pop("kind", float), **rule)
        except ValueError as error:
            raise TrainingArgumentError(f"{option_name(name)} {value}: {error}") from None
