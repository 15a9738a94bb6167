"""Ray is optional: ttd imports without it, and asking for the Ray executor without it says how to
install it. Runs in a fresh interpreter where importing `ray` fails, whether or not it is installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WITHOUT_RAY = """
import sys
sys.modules["ray"] = None  # what an environment without the [ray] extra looks like to `import ray`
import ttd_envs, ttd_agent.cli, ttd_agent.executor, ttd_agent.trainer, ttd_agent.ray_executor
from ttd_agent.executor import Executor
from ttd_envs.registration import make_problem
try:
    Executor(make_problem("ttd/LABS-v0", n=8), 2, 10.0, kind="ray")
except ImportError as exc:
    print(exc)
"""


def test_ttd_imports_without_ray_and_the_ray_executor_says_how_to_install_it() -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_RAY], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'needs Ray: pip install "ttd[ray]"' in done.stdout
