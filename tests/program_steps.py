"""A step check shared by the program problems' tests: hostile function bodies each end as a
zero-reward, invalid step with a message that names what was wrong."""

from __future__ import annotations

import gymnasium as gym


def assert_refused(env: gym.Env, entry: str, hostile: dict[str, str]) -> None:
    """Each key of `hostile` is the body of `def entry(**kwargs)` (indented lines after the first
    take four spaces); its value is a part of the error message that step must give ("" for any)."""
    for body, message in hostile.items():
        env.reset(seed=0)
        _, reward, _, _, info = env.step(f"```python\ndef {entry}(**kwargs):\n    {body}\n```")
        assert reward == 0.0 and not info["valid"] and info["error"], body
        assert message in info["error"], (body, info["error"])
