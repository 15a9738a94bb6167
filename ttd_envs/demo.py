"""A tour of one env without a model: run ttd/ErdosOverlap-v0 on a few built-in answers.

    python -m ttd_envs.demo

Shows a record reproduced, an ordinary construction, and hostile or wrong answers contained.
"""

from __future__ import annotations

import gymnasium as gym
from rich.console import Console
from rich.table import Table

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
    console = Console()
    env = gym.make("ttd/ErdosOverlap-v0", initial="record", budget_s=3, timeout_s=5)
    table = Table(title="ttd/ErdosOverlap-v0 on built-in answers (lower C5 is better; reward = 1/C5)")
    for column in ("answer", "valid", "C5", "reward", "program time (s)", "message"):
        table.add_column(column)
    try:
        for label, code in CANDIDATES.items():
            env.reset(seed=0)
            answer = "I have no program." if code is None else f"```python\n{code}\n```"
            _, reward, _, _, info = env.step(answer)
            score = "-" if info["score"] is None else f"{info['score']:.12f}"
            message = (info["error"] or "ok").splitlines()[-1][:70]
            table.add_row(label, str(info["valid"]), score, f"{reward:.6f}", f"{info['elapsed_s']:.2f}", message)
    finally:
        env.unwrapped.problem.close()
    console.print(table)
    console.print(f"Record to beat: C5 = {ttd_envs.make_problem('ttd/ErdosOverlap-v0').record.describe()}")


if __name__ == "__main__":
    main()
