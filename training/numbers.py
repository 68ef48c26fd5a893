"""The one parser of numbers that users give: options (command line, training arguments) and form fields.

Below the command line (``tag2text.hub.cli_args`` builds its argparse types on it) because the training
arguments check their values with it too; standard library only.
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
