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
import os

from ..training.option_values import parse_number


class UsageError(Exception):
    """A bad command-line value found after parsing; the message names the option and the value."""


def number_type(kind=float, name: str | None = None, **bounds):
    """An argparse ``type=`` of :func:`~tag2text.training.option_values.parse_number` (argparse then names the option in its one-line error)."""

    def parse(text: str):
        try:
            return parse_number(text, kind, **bounds)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = name or kind.__name__
    return parse


positive_int = number_type(int, "positive_int", at_least=1)  # an integer of at least 1
non_negative_int = number_type(int, "non_negative_int", at_least=0)
positive_float = number_type(float, "positive_float", above=0)  # a finite number above 0
non_negative_float = number_type(float, "non_negative_float", at_least=0)
probability = number_type(float, "probability", at_least=0, at_most=1)  # a number in [0, 1] (thresholds)


def int_at_least(minimum: int):
    """An ``type=`` for integers of at least ``minimum``."""
    return number_type(int, f"int_at_least_{minimum}", at_least=minimum)


def device(text: str) -> str:
    """A torch device name: ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (whether it exists is checked by
    :func:`check_device` in ``run``, where torch may be imported)."""
    name, _, index = text.partition(":")
    if name not in ("cpu", "cuda", "mps") or (index and (name != "cuda" or not index.isdigit())):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def check_device(value: str | None, option: str = "--device") -> None:
    """Raise :class:`UsageError` when the device named by ``value`` is not usable here (imports torch)."""
    if value is None or value == "cpu":
        return
    import torch

    if value.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"{option} {value}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        index = int(value.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UsageError(f"{option} {value}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif value == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{option} {value}: MPS is not available here; use --device cpu")


def existing_file(path, option: str) -> None:
    if not os.path.exists(path):
        raise UsageError(f"{option} {path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a directory, expected a file")


def existing_path(path, option: str) -> None:
    if not os.path.exists(path):
        raise UsageError(f"{option} {path}: no such file or directory")


def output_file(path, option: str) -> None:
    """A file to be written, checked before any work: not a directory, and no part of its folder an existing
    file. Missing folders are fine: every command creates them when it writes (:func:`make_parent_folders`), as
    ``--output-dir`` options create their directory."""
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # the nearest folder that exists (the root does)
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"{option} {path}: {parent} is a file, not a folder")


def make_parent_folders(path) -> None:
    """Create the missing folders of an output file checked by :func:`output_file`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def output_directory(path, option: str) -> None:
    """A directory to be written (created with its parents when missing): must not be an existing file."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a file, not a directory")


class HelpFormatter(argparse.HelpFormatter):
    """Help text with each option's default, as ``(default: X)``; left out where there is none (None,
    False flags) or the help text already states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            default is None
            or default is False
            or default is argparse.SUPPRESS
            or "default" in text.lower()
            or not action.option_strings
            or isinstance(default, (list, tuple)) and not default
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"
