"""Score a construction file for any math env with the env's own checks: `python -m ttd_envs.verify
ENV_ID FILE.json`.

Files use the shipped fixtures' formats: `{"sequence": [...]}` for ErdosOverlap and the
autocorrelation envs (and LABS, as a "+-" string, or a file of the bare signs that `ttd-agent best`
prints), `{"circles": [[x, y, r], ...]}` for circle
packing. FILE may also be a training run's directory or its `best.json` (what `./scripts/run.sh`
and `ttd-agent train` write): its best state is scored with the run's env options from its
`config.json` (`--env-arg` overrides them). The last line printed is the score (the problem's own number, full precision). An invalid
construction exits with status 1 and the reason on stderr; an unreadable file or unknown id exits
with status 2.

`--certify OUT.json` also writes a certificate (ttd_envs.certificates): the score recomputed
exactly, with its error bound, and the verdict against the record table (record, tie or below).
A certificate given as FILE is re-checked: its bounds are recomputed from its construction (exit 1
when they do not hold), and its verdict is recomputed against today's record table.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from ttd_envs import certificates
from ttd_envs.core.arguments import OneLineParser, env_arg
from ttd_envs.core.program_problem import InvalidConstruction
from ttd_envs.registration import problem_class

MATH_ENVS = ("ttd/ErdosOverlap-v0", "ttd/AutocorrelationAC1-v0", "ttd/AutocorrelationAC2-v0",
             "ttd/CirclePacking26-v0", "ttd/CirclePacking32-v0", "ttd/MinMaxDistance-v0", "ttd/Heilbronn-v0",
             "ttd/KissingNumber-v0", "ttd/CirclePackingRectangle-v0",
             "ttd/LABS-v0", "ttd/AutocorrelationAC3-v0", "ttd/UncertaintyInequality-v0", "ttd/SumsDifferences-v0")
EXIT_INVALID, EXIT_USAGE = 1, 2
BARE_SIGNS = re.compile(r"[+-]+")
"""A LABS sequence as `ttd-agent best` prints it: not JSON, read as `{"sequence": ...}`."""


def score_file(env_id: str, path: str | Path, env_kwargs: dict[str, Any] | None = None) -> float:
    """The score of the construction in `path` (a file, or a run's best state: `read_construction`)
    under `env_id` with `env_kwargs` (default settings).

    Raises InvalidConstruction (the construction breaks a rule), or OSError / ValueError (the file
    cannot be read as JSON) / KeyError (not a math env id, or settings it refuses).
    """
    data, kwargs = read_construction(env_id, path, env_kwargs or {})
    return make_math_problem(env_id, kwargs).score_construction(data)


def read_construction(env_id: str, path: str | Path, env_kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(construction data, env kwargs) of a construction file, or of a run's `best.json` or run
    directory: its best state's construction, with the run's options updated by `env_kwargs`."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.json"
    text = path.read_text()
    try:
        data = json.loads(text)
    except ValueError:
        if not BARE_SIGNS.fullmatch(text.strip()):
            raise
        return {"sequence": text.strip()}, env_kwargs
    if not (isinstance(data, dict) and isinstance(data.get("state"), dict) and "env" in data):
        return data, env_kwargs
    if data["env"] != env_id:
        raise KeyError(f"{path} holds the best state of a {data['env']} run, not of {env_id}")
    config = path.parent / "config.json"
    try:
        run_kwargs = (json.loads(config.read_text()).get("env_kwargs") or {}) if config.exists() else {}
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"{config} is damaged ({exc}); give the env's options with --env-arg") from None
    kwargs = {**run_kwargs, **env_kwargs}
    construction = data["state"].get("construction")
    to_data = getattr(make_math_problem(env_id, kwargs), "construction_data", None)
    return (construction if to_data is None else to_data(construction)), kwargs


def make_math_problem(env_id: str, env_kwargs: dict[str, Any] | None = None) -> Any:
    """The problem behind a math env id with these kwargs (KeyError for other ids or refused kwargs)."""
    if env_id not in MATH_ENVS:
        raise KeyError(f"{env_id!r} is not a math env; choose one of: {', '.join(MATH_ENVS)}")
    try:
        return problem_class(env_id)(**(env_kwargs or {}))  # builds no sandbox: that starts on first evaluate
    except (TypeError, ValueError) as exc:
        raise KeyError(f"bad --env-arg for {env_id}: {exc}") from None


def recheck_certificate(env_id: str, certificate: dict[str, Any]) -> int:
    """Re-check a certificate file: its env must match, its bounds must hold."""
    if certificate.get("env_id") != env_id:
        print(f"the certificate is for {certificate.get('env_id')!r}, not {env_id}", file=sys.stderr)
        return EXIT_USAGE
    problem = make_math_problem(env_id, certificate.get("env_kwargs") or {})
    holds, report = certificates.recheck(certificate, problem)
    print(textwrap.fill(report, width=100, subsequent_indent="    "), file=sys.stdout if holds else sys.stderr)
    if holds:  # the last line is the score, as for a construction file
        print(repr(problem.score_construction(certificate["construction"])))
    return 0 if holds else EXIT_INVALID


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m ttd_envs.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("env_id", help=f"one of: {', '.join(MATH_ENVS)}")
    parser.add_argument("file", help='construction JSON: {"sequence": [...]}, {"circles": [[x, y, r], ...]}, '
                        '{"points": [...]} or {"vectors": [...]}; or a training run\'s directory or best.json')
    parser.add_argument("--env-arg", action="append", type=env_arg, default=[], metavar="KEY=VALUE",
                        help="an env kwarg, e.g. --env-arg n=14 --env-arg d=3 for MinMaxDistance in 3-D")
    parser.add_argument("--certify", metavar="OUT.json", help="also write a certificate of the construction there")
    args = parser.parse_args(argv)
    try:
        data, kwargs = read_construction(args.env_id, args.file, dict(args.env_arg))
        if certificates.is_certificate(data):
            return recheck_certificate(args.env_id, data)
        score = make_math_problem(args.env_id, kwargs).score_construction(data)
        if args.certify:
            certificate = certificates.certify(args.env_id, make_math_problem(args.env_id, kwargs), data, kwargs)
            certificates.write(certificate, args.certify)
    except InvalidConstruction as exc:
        print(f"invalid construction for {args.env_id}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except certificates.CertificateError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.file} as JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    record = make_math_problem(args.env_id, kwargs).record
    print(f"{args.env_id}: valid construction from {args.file}")
    if record is not None:
        print(textwrap.fill(f"record: {record.describe()}", width=80, subsequent_indent="    "))
    if args.certify:
        print(f"certificate ({certificate['verdict']}; score in [{certificate['score']['lower']}, "
              f"{certificate['score']['upper']}]) written to {args.certify}")
    print(repr(score))
    return 0


if __name__ == "__main__":
    sys.exit(main())
