"""What every command-line tool of ttd shares: argparse whose errors are one line, and --env-arg."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any, NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line error that points at --help (instead of the usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def env_arg(text: str) -> tuple[str, Any]:
    """KEY=VALUE for --env-arg, VALUE read as JSON when it parses (numbers, true, lists), else a string."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--env-arg takes KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def one_of(name: str, value: str, choices: Sequence[str]) -> str:
    """`value` if it is one of `choices`, else a ValueError that lists them (an env kwarg's check)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
