"""What a GPU kernel problem's programs may see beyond the sandbox's closed view, found on this host.

CUDA initialises only with the driver's device nodes (/dev/nvidia*), its user-space libraries
(libcuda, libnvidia-*), read-only PCI/NUMA sysfs and `memfd_create`. The libraries live in
different places on different hosts: the distribution's /usr/lib/<triplet> (already in the view), a
container toolkit's /usr/local/nvidia/lib64, the GPU operator's /run/nvidia/driver, NixOS's
/run/opengl-driver/lib, WSL's /usr/lib/wsl/lib, or a directory only LD_LIBRARY_PATH names. Each
grant is per Sandbox, so no other problem's programs get them.
"""

from __future__ import annotations

import glob
import os
import subprocess

from ttd_envs.core.libraries import library_directory, program_library_dirs
from ttd_envs.core.sandbox import CACHE_DIR, Grants

LIBCUDA = "libcuda.so.1"

GPU_SYSFS = ("/sys/bus/pci/devices", "/sys/devices")
"""Read-only sysfs the CUDA driver consults (PCI topology, NUMA) where the machine has it."""
DRIVER_LIBRARIES = ("libcuda.so*", "libnvidia-*.so*")
DRIVER_PLACES = ("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/run/nvidia/driver/usr/lib/x86_64-linux-gnu",
                 "/run/nvidia/driver/usr/lib64", "/run/opengl-driver/lib", "/usr/lib/wsl/lib", "/usr/lib64",
                 "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu")
IN_THE_VIEW = ("/usr/",)


def _loader_cache_dirs() -> list[str]:
    """Directories of the libcuda the dynamic loader's cache knows (`ldconfig -p`)."""
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [os.path.dirname(line.rpartition("=> ")[2].strip()) for line in listing.splitlines()
            if line.strip().startswith("libcuda.so") and "=> " in line]


def nvidia_driver_dirs(library_path: str | None = None) -> tuple[list[str], list[str]]:
    """(directories to bind read-only, directories the program's LD_LIBRARY_PATH must name):
    every place on this host holding the driver's libraries (on `library_path`, default our
    LD_LIBRARY_PATH; in the loader's cache; the usual places), symlink targets included; binds
    leave out what the view already shows (/usr)."""
    library_path = os.environ.get("LD_LIBRARY_PATH", "") if library_path is None else library_path
    searched = [d for d in library_path.split(":") if d]
    cached = _loader_cache_dirs()
    found_bind: list[str] = []
    found_path: list[str] = []
    for directory in dict.fromkeys([*searched, *cached, *DRIVER_PLACES]):
        libraries = [p for pattern in DRIVER_LIBRARIES for p in glob.glob(os.path.join(directory, pattern))]
        if not libraries:
            continue
        for place in {directory, *(os.path.dirname(os.path.realpath(p)) for p in libraries)}:
            real = os.path.realpath(place)
            if not real.startswith(IN_THE_VIEW) and real not in found_bind:
                found_bind.append(real)
        if directory not in cached:  # the loader's cache (copied into the view) does not name it
            found_path.append(directory)
    return found_bind, found_path


def gpu_grants() -> Grants:
    """A kernel problem's grants on a GPU: the device nodes, the driver's libraries wherever they
    live, read-only sysfs, memfds (CUDA needs them at initialisation), a private writable kernel
    cache, no RLIMIT_AS (a CUDA context reserves far more address space than it uses)."""
    bind, library_path = nvidia_driver_dirs()
    env = {"TRITON_CACHE_DIR": CACHE_DIR}
    if driver := library_directory(LIBCUDA):
        env["TRITON_LIBCUDA_PATH"] = driver[0]  # Triton links its launcher against libcuda
    # The loader reads LD_LIBRARY_PATH only when a process starts, so the path goes to the zygote
    # (Grants.library_paths), not to the program's env.
    return Grants(read_only_paths=(*(p for p in GPU_SYSFS if os.path.exists(p)), *bind), devices=("/dev/nvidia*",),
                  writable_cache=True, env=env, address_space_limit=False, memfd=True,
                  library_paths=tuple(dict.fromkeys((*library_path, *program_library_dirs(LIBCUDA)))))
