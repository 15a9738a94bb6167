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

from ttd_envs.core.program_problem import InvalidConstruction
from ttd_envs.registration import problem_class

MATH_ENVS = ("ttd/ErdosOverlap-v0", "ttd/AutocorrelationAC1-v0", "ttd/AutocorrelationAC2-v0",
             "ttd/CirclePacking26-v0", "ttd/CirclePacking32-v0")
EXIT_INVALID, EXIT_USAGE = 1, 2


def score_file(env_id: str, path: str | Path) -> float:
    """The score of the construction in `path` under `env_id`'s default settings.

    Raises InvalidConstruction (the construction breaks a rule), or OSError / ValueError (the file
    cannot be read as JSON) / KeyError (not a math env id).
    """
    if env_id not in MATH_ENVS:
        raise KeyError(f"{env_id!r} is not a math env; choose one of: {', '.join(MATH_ENVS)}")
    data = json.loads(Path(path).read_text())
    problem = problem_class(env_id)()  # builds no sandbox: that is started lazily, on first evaluate
    return problem.score_construction(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ttd_envs.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("env_id", help=f"one of: {', '.join(MATH_ENVS)}")
    parser.add_argument("file", help='construction JSON: {"sequence": [...]} or {"circles": [[x, y, r], ...]}')
    args = parser.parse_args(argv)
    try:
        score = score_file(args.env_id, args.file)
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
