"""verl: a custom reward function for every ttd env and a parquet writer for start states.

    python -c "from ttd_envs.integrations.verl import write_parquet; \
               write_parquet('erdos.parquet', 'ttd/ErdosOverlap-v0', count=64, env_kwargs={'initial': 'record'})"
    python -m verl.trainer.main_ppo data.train_files=erdos.parquet \
        reward.custom_reward_function.path=pkg://ttd_envs.integrations.verl \
        reward.custom_reward_function.name=compute_score ...

Rows follow verl's RLHF format: `data_source` is the env id, `prompt` a one-message chat,
`reward_model.ground_truth` the record to beat (informational; discovery has no label), and
`extra_info` carries the env options and the start state as JSON. `compute_score` rebuilds the
problem once per reward worker and scores with its own sandboxed evaluation.
`ttd/MathVote-v0` is a group reward: use the `ttd_majority_vote` reward manager
(`ttd_agent.integrations.verl`) instead of `compute_score`. No torch or verl import here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ttd_envs.integrations import common


def compute_score(data_source: str, solution_str: str, ground_truth: Any = None,
                  extra_info: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, float]:
    """verl's custom reward: the env's reward for one response, plus `valid` for the logs."""
    if common.is_group_env(data_source):
        raise ValueError(f"{data_source} is a majority vote over a group of responses: set "
                         "reward.reward_manager.name=ttd_majority_vote instead of a custom reward function")
    info = dict(extra_info or {})
    if "state" not in info:
        raise ValueError(f"extra_info has no 'state' for {data_source}: write the data with "
                         "ttd_envs.integrations.verl.write_parquet (it stores the start state there)")
    evaluation = common.evaluate(data_source, info.get("env_kwargs"), info["state"], solution_str)
    return {"score": common.finite_reward(evaluation), "valid": float(evaluation.valid)}


def verl_rows(env_id: str, count: int = 1, seed: int = 0, env_kwargs: Mapping[str, Any] | None = None,
              split: str = "train") -> list[dict[str, Any]]:
    """Start states as verl RLHF rows (see the module docstring)."""
    record = getattr(common.problem_for(env_id, env_kwargs), "record", None) if not common.is_group_env(env_id) else None
    ability = "math" if env_id.startswith("ttd/Math") else "discovery"
    rows = []
    for index, r in enumerate(common.start_rows(env_id, count, seed, env_kwargs)):
        rows.append({
            "data_source": env_id,
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "ability": ability,
            "reward_model": {"style": "rule", "ground_truth": "" if record is None else repr(record.score)},
            "extra_info": {"split": split, "index": index, "env_kwargs": r["env_kwargs"], "state": r["state"]},
        })
    return rows


def write_parquet(path: str | Path, env_id: str, count: int = 1, seed: int = 0,
                  env_kwargs: Mapping[str, Any] | None = None, split: str = "train") -> Path:
    """Write `count` start-state rows of `env_id` to a parquet file verl's RLHFDataset reads."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(verl_rows(env_id, count, seed, env_kwargs, split)).to_parquet(path, index=False)
    return path
