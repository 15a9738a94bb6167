"""CUDA initialises inside the sandbox in every mode this machine offers (per-run cgroups as root,
init accounting as root, init accounting unprivileged) with a kernel problem's grants
(`gpu_grants`: devices, driver libraries, memfd), and a program without them cannot reach the GPU.

Skipped without CUDA, with the reason; `scripts/gpu_check.sh` runs every GPU-marked test."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU (CUDA initialisation in the sandbox); run scripts/gpu_check.sh on one",
                allow_module_level=True)

from conftest import sandbox_in_mode  # noqa: E402

from ttd_envs.core.sandbox import GiB, Grants, Limits  # noqa: E402
from ttd_envs.problems.kernels.gpu_grants import gpu_grants  # noqa: E402

pytestmark = pytest.mark.gpu
CUDA_PROGRAM = ("def run():\n    import torch\n    x = torch.ones(256, 256, device='cuda')\n"
                "    return [torch.cuda.get_device_name(0), float((x @ x).sum().item())]\n")
LIMITS = Limits(wall_s=180, memory_bytes=16 * GiB, max_processes=256, disk_bytes=1 * GiB)


def _run(sandbox, source: str) -> tuple[bool, object, str | None, list[str]]:
    result = sandbox.run_python(source, "run", preset_modules={}, limits=LIMITS)
    return result.ok, result.value, result.error, result.isolation


@pytest.mark.parametrize("mode", ["root", "root-fallback", "unprivileged"])
def test_cuda_initialises_with_the_gpu_grants_in_every_mode(mode):
    box = sandbox_in_mode(mode, preload=("torch",), grants=gpu_grants())
    try:
        ok, value, error, isolation = box.call(_run, CUDA_PROGRAM)
    finally:
        box.close()
    print(f"{mode}: {value or error}; {[line for line in isolation if 'accounted' in line or 'cgroup' in line]}")
    assert ok, error
    assert value[1] == 256.0 ** 3


def test_without_the_grants_the_gpu_is_out_of_reach():
    box = sandbox_in_mode("root-fallback", preload=("torch",), grants=Grants(address_space_limit=False))
    try:
        ok, value, error, _ = box.call(_run, CUDA_PROGRAM)
    finally:
        box.close()
    assert not ok, value
    print(f"without the grants: {error}")
