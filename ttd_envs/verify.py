"""Score a construction file for any math env with the env's own checks: `python -m ttd_envs.verify
ENV_ID FILE.json`.

Files use the shipped fixtures' formats: `{"sequence": [...]}` for ErdosOverlap and the two
autocorrelation envs, `{"circles": [[x, y, r], ...]}` for circle packing. The last line printed is
the score (the problem's own number, full precision). An invalid construction exits with status 1
and the reason on stderr; an unreadable file or unknown id exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from ttd_envs.core.program_problem import InvalidConstruction
from ttd_envs.registration import problem_class

MATH_ENVS = ("ttd/ErdosOverlap-v0", "ttd/AutocorrelationAC1-v0", "ttd/AutocorrelationAC2-v0",
             "ttd/CirclePacking26-v0", "ttd/CirclePacking32-v0", "ttd/MinMaxDistance-v0", "ttd/Heilbronn-v0",
             "ttd/KissingNumber-v0", "ttd/CirclePackingRectangle-v0")
EXIT_INVALID, EXIT_USAGE = 1, 2


def env_arg(text: str) -> tuple[str, Any]:
    """KEY=VALUE, VALUE read as JSON when it parses (numbers, true, lists), else kept as a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--env-arg takes KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def score_file(env_id: str, path: str | Path, env_kwargs: dict[str, Any] | None = None) -> float:
    """The score of the construction in `path` under `env_id` with `env_kwargs` (default settings).

    Raises InvalidConstruction (the construction breaks a rule), or OSError / ValueError (the file
    cannot be read as JSON) / KeyError (not a math env id, or settings it refuses).
    """
    if env_id not in MATH_ENVS:
        raise KeyError(f"{env_id!r} is not a math env; choose one of: {', '.join(MATH_ENVS)}")
    try:
        problem = problem_class(env_id)(**(env_kwargs or {}))  # builds no sandbox: that starts on first evaluate
    except (TypeError, ValueError) as exc:
        raise KeyError(f"bad --env-arg for {env_id}: {exc}") from None
    data = json.loads(Path(path).read_text())
    return problem.score_construction(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ttd_envs.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("env_id", help=f"one of: {', '.join(MATH_ENVS)}")
    parser.add_argument("file", help='construction JSON: {"sequence": [...]}, {"circles": [[x, y, r], ...]}, '
                        '{"points": [...]} or {"vectors": [...]}')
    parser.add_argument("--env-arg", action="append", type=env_arg, default=[], metavar="KEY=VALUE",
                        help="an env kwarg, e.g. --env-arg n=14 --env-arg d=3 for MinMaxDistance in 3-D")
    args = parser.parse_args(argv)
    try:
        score = score_file(args.env_id, args.file, dict(args.env_arg))
    except InvalidConstruction as exc:
        print(f"invalid construction for {args.env_id}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.file} as JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    record = problem_class(args.env_id).record
    print(f"{args.env_id}: valid construction from {args.file}")
    if record is not None:
        print(textwrap.fill(f"record: {record.describe()}", width=80, subsequent_indent="    "))
    print(repr(score))
    return 0


if __name__ == "__main__":
    sys.exit(main())
