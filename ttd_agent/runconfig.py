"""Where a run's configuration comes from: defaults, a TOML file, the command line, a saved run.

`--config run.toml` holds flags by name (`group-size = 4` or `group_size = 4`); flags given on the
command line override it, and `config.json` of the run stores the resolved result.

On `--resume` the saved configuration wins, and a flag that asks for something else is either
applied or refused. `RESUME_APPLY` lists the fields that cannot change what was learned (how
long to run, how answers are evaluated, where and how often things are written); every other
field, including any added later and not listed here, is refused, because changing the env, the
model, the objective, the group shape, the seed or the learning rate mid-run would make the
resumed run a different experiment under the same name.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RESUME_APPLY: frozenset[str] = frozenset({
    "steps", "eval_workers", "executor", "eval_timeout_s", "checkpoint_every", "plot_every", "device",
    "run_dir", "ray_address", "episodes", "eval_every", "sinks", "overlap",
})
"""Config fields a resumed run takes from the command line. Anything else that differs is refused."""


def load_toml(path: str | Path, known: Iterable[str]) -> dict[str, Any]:
    """The flags in a TOML file, keyed by their argparse names (dashes become underscores)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"--config {path}: not valid TOML ({error})") from None
    flags = {key.replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(flags) - set(known))
    if unknown:
        raise ValueError(f"--config {path}: unknown setting(s) {', '.join(unknown)}; "
                         f"use the names of `ttd-agent train --help` (e.g. group-size = 4)")
    if isinstance(flags.get("env_arg"), Mapping):  # env-arg = {n = 40} reads better than a list of pairs
        flags["env_arg"] = list(flags["env_arg"].items())
    return flags


def reconcile_resume(saved: Mapping[str, Any], requested: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The configuration a resumed run continues with, and the fields that changed.

    `requested` holds only the fields the user asked for (flags given, not defaults). Fields in
    `RESUME_APPLY` take the requested value; any other field that differs from the saved run
    raises ValueError naming both lists, so nothing is ignored silently.
    """
    merged = dict(saved)
    applied, refused = [], []
    for name, value in requested.items():
        if name in saved and saved[name] == value:
            continue
        if name in RESUME_APPLY:
            merged[name] = value
            applied.append(name)
        else:
            refused.append(f"{name} (saved {saved.get(name)!r}, asked {value!r})")
    if refused:
        kept = f"; these would apply: {', '.join(applied)}" if applied else ""
        raise ValueError(f"--resume cannot change what the run learns with: {'; '.join(refused)}{kept}. "
                         f"Drop those flags to continue the run, or start a new run in another --run-dir")
    return merged, applied
