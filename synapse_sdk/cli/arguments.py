"""The command line's value parsers: sizes, counts, concurrency and seconds, each with a one-line error.

Shared by the parser (``synapse_sdk.cli``) and by ``synapse-upload bench``,
which parses its ``--size`` and ``--rounds`` itself. It imports nothing of
the package, so every command module can use it and imports flow one way:
``synapse_sdk.cli`` → the command modules → this.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["parse_concurrency", "parse_size", "positive_float", "positive_int"]

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2}
_UNITS |= {"g": 1024**3, "gb": 1000**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    """``"50MiB"``, ``"64k"``, ``"1048576"`` → bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    unit = match and match.group(2).lower()
    if not match or unit not in _UNITS or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"not a positive size: {text!r} (try 50MiB, 8M or 1048576)")
    return int(match.group(1)) * _UNITS[unit]


def positive_int(text: str) -> int:
    """``"4"`` → 4; zero, signs and anything else are refused."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def parse_concurrency(text: str) -> int | str:
    """``"auto"`` → ``"auto"``; ``"4"`` → 4; anything else is refused."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number or 'auto': {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    """``"2.5"`` → 2.5 seconds; zero, negatives, NaN and infinity are refused."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value
