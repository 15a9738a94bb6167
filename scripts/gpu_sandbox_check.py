"""GPU check: CUDA and Triton work inside the sandbox, with the kernel problems' own grants.

    python3 scripts/gpu_sandbox_check.py             # CUDA: torch sees the GPU and a Triton kernel runs
    python3 scripts/gpu_sandbox_check.py --dry-run   # any CPU: same sandbox path, no device nodes

Prints where libcuda was found and what the grants give programs (loader path, Triton's libcuda
path, the isolation the run got), then what a sandboxed program saw. One `gpu_sandbox_check:`
summary line; exits non-zero when the program could not use the GPU (or, in a dry run, could not run).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

PROGRAM = '''
import ctypes, os
import torch
import triton
import triton.language as tl


@triton.jit
def _double(x_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + i, tl.load(x_ptr + i, mask=i < n) * 2, mask=i < n)


def run(gpu):
    seen = {name: os.environ.get(name) for name in ("LD_LIBRARY_PATH", "TRITON_LIBCUDA_PATH", "TRITON_CACHE_DIR")}
    try:
        ctypes.CDLL("libcuda.so.1")
        seen["libcuda"] = "loads"
    except OSError as exc:
        seen["libcuda"] = str(exc)
    seen["cuda"] = torch.cuda.is_available()
    if gpu and seen["cuda"]:
        x = torch.ones(1000, device="cuda")
        _double[(4,)](x, 1000, BLOCK=256)
        seen["triton_sum"] = float(x.sum())
        seen["device"] = torch.cuda.get_device_name(0)
    return seen
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="on a CPU: the sandbox path without device nodes")
    args = parser.parse_args()

    from ttd_envs.core.libraries import library_directory
    from ttd_envs.core.sandbox import GiB, Limits, Sandbox
    from ttd_envs.problems.kernels.gpu_grants import LIBCUDA, gpu_grants
    from ttd_envs.problems.kernels.problem import GPU_HOST_MEMORY

    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpu_sandbox_check: FAIL no CUDA device visible to torch (use --dry-run on a CPU)")
            return 1
    found = library_directory(LIBCUDA)
    print(f"libcuda: {'%s (%s)' % found if found else 'not found on this host'}")
    grants = gpu_grants()
    if args.dry_run:
        grants = dataclasses.replace(grants, devices=())
    print(f"grants: library_paths {list(grants.library_paths)}, read-only {list(grants.read_only_paths)}, "
          f"devices {list(grants.devices)}, env {grants.env}")
    started = time.perf_counter()
    with Sandbox(preload=("torch",), grants=grants) as sandbox:
        result = sandbox.run_python(PROGRAM, "run", kwargs={"gpu": not args.dry_run}, preset_modules={},
                                    limits=Limits(wall_s=120, memory_bytes=GPU_HOST_MEMORY, max_processes=256,
                                                  disk_bytes=1 * GiB, address_space_bytes=None))
        mechanism = sandbox.mechanism
    print(f"sandbox: {mechanism}; isolation {result.isolation}; {time.perf_counter() - started:.1f} s")
    if not result.ok:
        print(f"gpu_sandbox_check: FAIL the program did not run: {result.error}\n{result.stderr[-2000:]}")
        return 1
    seen = result.value
    print(f"program saw: {seen}")
    if args.dry_run:
        print(f"gpu_sandbox_check: ok (dry run) the sandbox ran torch; libcuda in there: {seen['libcuda']}")
        return 0
    ok = seen["cuda"] and seen.get("triton_sum") == 2000.0
    print(f"gpu_sandbox_check: {'ok' if ok else 'FAIL'} cuda {seen['cuda']}, libcuda {seen['libcuda']}, "
          f"Triton sum {seen.get('triton_sum')} (2000 expected), device {seen.get('device')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
