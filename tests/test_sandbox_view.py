"""The closed view keeps the interpreter's own import path visible wherever it lives: a venv
under /tmp (which the sandbox covers with its private tmpfs) still imports its packages."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import ttd_envs

CHECKOUT = Path(ttd_envs.__file__).resolve().parents[1]


def test_a_venv_under_tmp_stays_importable(tmp_path):
    venv = tmp_path / "venv"  # tmp_path lives under /tmp
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "outer.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{CHECKOUT}\n")
    (site / "ttd_venv_probe.py").write_text("ANSWER = 42\n")
    script = textwrap.dedent("""
        from ttd_envs.core.sandbox import Sandbox
        source = ("import ttd_venv_probe, scipy.special, scipy.ndimage\\n"
                  "def run():\\n    return ttd_venv_probe.ANSWER + int(scipy.special.comb(4, 2))\\n")
        with Sandbox(preload=("numpy",)) as box:
            result = box.run_python(source, "run")
        print(result.ok, result.value, result.error)
    """)
    out = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True, timeout=120,
                         cwd="/")
    assert out.stdout.split()[:2] == ["True", "48"], out.stdout + out.stderr
