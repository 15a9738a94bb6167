"""Optional metric sinks beside `metrics.jsonl`: TensorBoard and Weights & Biases (offline).

`metrics.jsonl` stays the record of a run; a sink mirrors each step's numeric metrics so a run
can be watched live (`tensorboard --logdir runs/`) or synced later (`wandb sync RUN/wandb/...`).
Both are optional extras (`pip install 'ttd[sinks]'`); asking for one that is not installed is a
configuration error that says what to install. W&B runs offline (nothing leaves the machine)
under an id derived from the run directory, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

SINKS = ("tensorboard", "wandb")


class Sink(Protocol):
    def log(self, step: int, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def numeric(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row (booleans and None left out)."""
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class TensorBoardSink:
    """Scalars under `RUN/tensorboard`, one event per metric and step."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError("--sink tensorboard needs the tensorboard package: pip install 'ttd[sinks]'") from error
        self.directory = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.directory))

    def log(self, step: int, row: dict[str, Any]) -> None:
        for key, value in numeric(row).items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """An offline W&B run in `RUN/wandb`, resumed under the same id when the run resumes."""

    def __init__(self, run_dir: Path, config: dict[str, Any]):
        try:
            import wandb
        except ImportError as error:
            raise ImportError("--sink wandb needs the wandb package: pip install 'ttd[sinks]'") from error
        run_dir = Path(run_dir).resolve()
        run_id = "ttd-" + hashlib.sha1(str(run_dir).encode()).hexdigest()[:12]
        self.run = wandb.init(mode="offline", dir=str(run_dir), project="ttd", name=run_dir.name, id=run_id,
                              resume="allow", config=config, settings=wandb.Settings(silent=True))

    def log(self, step: int, row: dict[str, Any]) -> None:
        self.run.log(numeric(row), step=step)

    def close(self) -> None:
        self.run.finish()


def check_sinks(names: list[str]) -> None:
    """Raise for an unknown sink or one whose package is missing, before a run starts."""
    unknown = sorted(set(names) - set(SINKS))
    if unknown:
        raise ValueError(f"unknown sink(s) {unknown}; choose from {', '.join(SINKS)}")
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ImportError(f"--sink {name} needs the {name} package: pip install 'ttd[sinks]'")


def make_sinks(names: list[str], run_dir: Path, config: dict[str, Any]) -> list[Sink]:
    """The sinks named (each at most once); raises for an unknown or uninstalled one."""
    check_sinks(names)
    sinks: list[Sink] = []
    for name in dict.fromkeys(names):
        sinks.append(TensorBoardSink(run_dir) if name == "tensorboard" else WandbSink(run_dir, config))
    return sinks
