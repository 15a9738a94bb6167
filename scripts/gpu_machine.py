"""What a failure in scripts/gpu_check.sh needs to be understood, printed before anything can fail.

    python3 scripts/gpu_machine.py

Uses the standard library only (torch when it imports), never the project, so it runs before the
carried wheels are installed. Each fact is one `machine:` line, and a probe that breaks prints why
instead of stopping the others. Exit status: 0 when torch sees a CUDA GPU, 3 when it does not.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable

PACKAGES = ("torch", "triton", "transformers", "peft", "gymnasium", "farama-notifications", "numpy", "scipy",
            "numba", "pytest", "vllm", "ttd")


def fact(name: str, probe: Callable[[], str]) -> None:
    try:
        text = probe()
    except Exception as exc:  # noqa: BLE001 - a broken probe is itself the fact to report
        text = f"could not tell ({type(exc).__name__}: {exc})"
    print(f"machine: {name}: {text}", flush=True)


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return (done.stdout or done.stderr).strip()


def nvidia_smi() -> str:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "not on PATH"
    return run(smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader")


def libcuda() -> str:
    ctypes.CDLL("libcuda.so.1")
    with open("/proc/self/maps") as maps:
        where = sorted({line.split()[-1] for line in maps if "libcuda.so" in line})
    return "loads from " + ", ".join(where)


def ld_cache() -> str:
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    lines = [line.strip() for line in run(ldconfig, "-p").splitlines() if "libcuda.so" in line]
    return " | ".join(lines) or "no libcuda entry"


def cgroups() -> str:
    with open("/proc/mounts") as mounts:
        kinds = sorted({f"{m.split()[1]} ({m.split()[2]})" for m in mounts if m.split()[1].startswith("/sys/fs/cgroup")})
    layout = "v2" if "/sys/fs/cgroup (cgroup2)" in kinds else "v1 or hybrid" if kinds else "none mounted"
    with open("/proc/self/cgroup") as own:
        mine = " | ".join(own.read().split())
    return f"{layout}; mounts {', '.join(kinds[:6])}{' ...' if len(kinds) > 6 else ''}; this process in {mine}"


def versions() -> str:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    return ", ".join(f"{name} {version(name)}" for name in PACKAGES)


def main() -> int:
    fact("system", lambda: f"{platform.platform()}; uid {os.geteuid()}; {os.cpu_count()} CPUs")
    fact("python", lambda: f"{platform.python_version()} at {sys.executable}")
    fact("nvidia-smi", nvidia_smi)
    fact("libcuda.so.1", libcuda)
    fact("ld.so cache", ld_cache)
    fact("LD_LIBRARY_PATH", lambda: os.environ.get("LD_LIBRARY_PATH", "(unset)"))
    fact("cgroups", cgroups)
    fact("packages", versions)
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken torch is reported, not raised
        print(f"machine: torch: does not import ({type(exc).__name__}: {exc})")
        return 3
    fact("torch", lambda: f"{torch.__version__}, CUDA build {torch.version.cuda}, "
                          f"cuda available {torch.cuda.is_available()}")
    if not torch.cuda.is_available():
        return 3
    props = torch.cuda.get_device_properties(0)
    fact("GPU", lambda: f"{props.name}, {props.total_memory / 2**30:.0f} GiB, capability {props.major}.{props.minor}, "
                        f"{props.multi_processor_count} SMs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
