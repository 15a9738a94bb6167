"""The env-side adapters need no torch, and importing ttd needs no framework."""

import subprocess
import sys


def test_env_side_adapters_import_without_torch_or_frameworks():
    code = ("import sys, ttd_envs, ttd_envs.integrations.common, ttd_envs.integrations.trl, "
            "ttd_envs.integrations.verl; "
            "print(sorted(m for m in ('torch', 'verifiers', 'trl', 'verl', 'openenv', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
