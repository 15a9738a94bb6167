"""Certificates: a record claim as a file anyone can re-check, not a float.

A certificate holds the construction, its score recomputed exactly (or enclosed in a rigorous
interval) with the error bound stated, the verifier's version, and the record it was compared
with (from the record table, with its source). `python -m ttd_envs.verify ID CERT.json` re-checks
one: it recomputes the bounds from the construction and compares them with the stated ones.

A problem takes part by providing

    exact_score(data) -> Bound          # data: a construction file's object, e.g. {"sequence": [...]}
    construction_data(construction) -> dict   # a State's construction as such an object

`exact_score` applies the same validity rules as the float scorer and raises InvalidConstruction.

Verdicts: the score beats the record only when the whole interval is better than the record by
more than the table's `tie_tolerance`; an interval within the tolerance of the record is a tie
(looser tolerances have produced false records in public, e.g. on circle packing).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from importlib import metadata
from pathlib import Path
from typing import Any

from ttd_envs.core.exact import Bound, decimal_down, decimal_up
from ttd_envs.records import RecordEntry, RecordTable, load_records

KIND, FORMAT = "ttd-certificate", 1
DIGITS = 40


class CertificateError(ValueError):
    """A certificate file is malformed, or its problem cannot be certified."""


def verdict(bound: Bound, table: RecordTable, record: RecordEntry | None) -> tuple[str, float | None]:
    """("record" | "tie" | "below the record" | "no record to compare", gain over the record)."""
    if record is None:
        return "no record to compare", None
    value = Fraction(record.value)
    gain_low, gain_high = ((bound.lower - value, bound.upper - value) if table.higher_is_better
                           else (value - bound.upper, value - bound.lower))
    tolerance = Fraction(table.tie_tolerance)
    if gain_low > tolerance:
        return "record", float(gain_low)
    if gain_high >= -tolerance:
        return "tie", float((gain_low + gain_high) / 2)
    return "below the record", float((gain_low + gain_high) / 2)


def exact_bound(problem: Any, data: Any) -> Bound:
    scorer = getattr(problem, "exact_score", None)
    if scorer is None:
        raise CertificateError(f"{problem.name} has no exact scorer, so its results cannot be certified")
    return scorer(data)


def certify(env_id: str, problem: Any, data: Any, env_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The certificate of one construction object (raises InvalidConstruction or CertificateError).

    The record compared with is the best verified one of the problem's `record_instance` (the
    kwargs that pick its row of the record table, e.g. {"n": 40} for LABS; {} when there is one).
    `env_kwargs`, what the problem was made with, is stored so that a re-check makes the same one."""
    instance = dict(getattr(problem, "record_instance", {}))
    bound = exact_bound(problem, data)
    table = load_records(env_id)
    record = table.best(instance, verified=True)
    result, gain = verdict(bound, table, record)
    return {"kind": KIND, "format": FORMAT, "env_id": env_id, "env_kwargs": dict(env_kwargs or {}),
            "instance": instance,
            "score": bound.as_json(), "verdict": result, "gain_over_record": gain,
            "tie_tolerance": table.tie_tolerance,
            "record": None if record is None else {
                "value": record.value, "who": record.who, "when": record.when, "source": record.source},
            "verifier": {"package": f"ttd {_version()}",
                         "scorer": f"{type(problem).__module__}:{type(problem).__qualname__}.exact_score"},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "construction": data}


def certify_state(env_id: str, problem: Any, construction: Any, env_kwargs: dict[str, Any] | None = None,
                  ) -> dict[str, Any]:
    """The certificate of a State's construction (for the trainer's best state)."""
    convert = getattr(problem, "construction_data", None)
    if convert is None:
        raise CertificateError(f"{problem.name} cannot write its constructions as data")
    return certify(env_id, problem, convert(construction), env_kwargs)


def write(certificate: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(certificate, indent=1) + "\n")
    return path


def is_certificate(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == KIND


def recheck(certificate: dict[str, Any], problem: Any) -> tuple[bool, str]:
    """(whether the certificate's stated bounds hold for its construction, a one-line report).

    The bounds are recomputed from the construction; the verdict is recomputed against today's
    record table (a record certified last month may be a tie with a newer one).
    """
    try:
        if certificate.get("format") != FORMAT:
            raise CertificateError(f"unknown certificate format {certificate.get('format')!r} (expected {FORMAT})")
        stated = certificate["score"]
        stated_lower, stated_upper = Fraction(Decimal(stated["lower"])), Fraction(Decimal(stated["upper"]))
        env_id = certificate["env_id"]
        instance = dict(getattr(problem, "record_instance", {}))
        construction = certificate["construction"]
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise CertificateError(f"malformed certificate: {type(exc).__name__}: {exc}") from None
    bound = exact_bound(problem, construction)
    if bound.lower < stated_lower or bound.upper > stated_upper:
        return False, (f"the stated score [{stated['lower']}, {stated['upper']}] does not hold: the construction "
                       f"scores [{decimal_down(bound.lower, DIGITS)}, {decimal_up(bound.upper, DIGITS)}]")
    table = load_records(env_id)
    versus = table.best(instance, verified=True)
    result, gain = verdict(bound, table, versus)
    against = f" against {versus.describe()}" if versus is not None else ""
    gain_text = f" (gain {gain:+.3g}, tie tolerance {table.tie_tolerance:g})" if gain is not None else ""
    return True, (f"certificate holds: score in [{decimal_down(bound.lower, 20)}, {decimal_up(bound.upper, 20)}]; "
                  f"verdict today: {result}{against}{gain_text}")


def _version() -> str:
    try:
        return metadata.version("ttd")
    except metadata.PackageNotFoundError:
        return "unknown"


__all__ = ["Bound", "CertificateError", "certify", "certify_state", "is_certificate",
           "recheck", "verdict", "write"]
