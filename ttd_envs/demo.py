"""A tour of one env without a model: run ttd/ErdosOverlap-v0 on a few built-in answers.

    python -m ttd_envs.demo

Shows a record reproduced, an ordinary construction, and hostile or wrong answers contained.
"""

from __future__ import annotations

import textwrap

import gymnasium as gym
from rich.console import Console

import ttd_envs  # noqa: F401 - registers the ids

RUN = "def run(seed=42, budget_s=10, **kwargs):\n"
CANDIDATES = {
    "returns the shipped record": RUN + "    h = initial_h_values\n    return h, c5_bound(h), len(h)",
    "smooth bump, n = 400": (RUN + "    x = np.linspace(0, 2, 400, endpoint=False)\n"
                             "    h = np.clip(1.2 - 1.4 * np.abs(x - 1), 0, 1)\n"
                             "    h = h * 200 / h.sum()\n    return h, c5_bound(h), 400"),
    "under-reports its bound": RUN + "    h = initial_h_values\n    return h, c5_bound(h) - 0.05, len(h)",
    "infinite loop": RUN + "    while True:\n        pass",
    "tries the network": "import socket\n" + RUN + "    socket.create_connection(('1.1.1.1', 443), timeout=2)",
    "no code block": None,
}


def main() -> None:
    """One line per answer (and its message, wrapped, below it): fits an 80-column terminal."""
    console = Console(highlight=False)
    env = gym.make("ttd/ErdosOverlap-v0", initial="record", budget_s=3, timeout_s=5)
    console.print("[bold]ttd/ErdosOverlap-v0 on built-in answers[/] (lower C5 is better; reward = 1/C5)\n")
    console.print(f"{'answer':<28} {'valid':<6} {'C5':<15} {'reward':<9} program time")
    try:
        for label, code in CANDIDATES.items():
            env.reset(seed=0)
            answer = "I have no program." if code is None else f"```python\n{code}\n```"
            _, reward, _, _, info = env.step(answer)
            score = "-" if info["score"] is None else f"{info['score']:.12f}"
            valid = "yes" if info["valid"] else "no"
            console.print(f"{label:<28} {valid:<6} {score:<15} {reward:<9.6f} {info['elapsed_s']:.2f} s", markup=False)
            if info["error"]:
                message = [line.strip() for line in info["error"].splitlines() if line.strip()][-1]  # not a traceback
                console.print(textwrap.fill(message, width=min(console.width, 80), initial_indent="    ",
                                            subsequent_indent="    ", max_lines=3), markup=False)
    finally:
        env.unwrapped.problem.close()
    record = ttd_envs.make_problem("ttd/ErdosOverlap-v0").record.describe()
    console.print(f"\nRecord to beat: C5 = {record}", markup=False)


if __name__ == "__main__":
    main()
