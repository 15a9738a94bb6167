"""Measure the controls and the MAGIC scores of the built-in datasets and ship them.

    python -m ttd_envs.problems.denoising.reference        # rewrites data/denoising/reference_scores.json

The env reads MAGIC's scores from this file so that `reset` does not rerun MAGIC; the tests
recompute every entry and compare.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ttd_envs.data.denoising.magic_denoise import denoise
from ttd_envs.problems.denoising.datasets import BUILTIN, load_split
from ttd_envs.problems.denoising.metrics import DenoisingMetrics
from ttd_envs.problems.denoising.problem import RANDOM_STATE, REFERENCE_FILE, reference_key


def measure(dataset: str, split_seed: int = 0, data_seed: int = 0) -> dict[str, Any]:
    """Shape after filtering and split, control values, and the MAGIC program's scores."""
    split = load_split(dataset, split_seed, data_seed=data_seed)
    metrics = DenoisingMetrics(split.train, split.test)
    magic = metrics.scores(denoise(split.train, random_state=RANDOM_STATE))
    return {"shape": list(split.shape), "controls": asdict(metrics.controls), "magic": magic.to_dict()}


def main() -> None:
    table = {reference_key(name, 0, 0): measure(name) for name in BUILTIN}
    path = Path(__file__).resolve().parents[2] / "data" / "denoising" / REFERENCE_FILE
    path.write_text(json.dumps(table, indent=2) + "\n")
    for key, entry in table.items():
        print(key, entry)


if __name__ == "__main__":
    main()
