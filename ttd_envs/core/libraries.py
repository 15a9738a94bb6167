"""Where the host's dynamic loader finds a shared library, so a sandbox can show it to programs.

A sandboxed program starts from a scrubbed environment, so the trusted process's LD_LIBRARY_PATH
never reaches it. Where a library is reachable only through that variable (the CUDA driver's
`libcuda.so.1` in most CUDA container images, under /usr/local/nvidia/lib64), torch in the program
reports no driver and Triton cannot link its launcher. `program_library_dirs` says which folders a
program must be told about (`Grants.library_paths` binds them read-only and puts them on the
LD_LIBRARY_PATH its process starts with, the only moment the loader reads it).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sysconfig

log = logging.getLogger(__name__)

_TRIPLET = sysconfig.get_config_var("MULTIARCH") or ""
DEFAULT_DIRS = tuple(d for d in ("/lib64", "/usr/lib64", "/lib", "/usr/lib",
                                 *((f"/lib/{_TRIPLET}", f"/usr/lib/{_TRIPLET}") if _TRIPLET else ())))
"""Where the loader looks after LD_LIBRARY_PATH and the ld.so cache (glibc's built-in folders)."""
USUAL_DRIVER_DIRS = ("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/lib/wsl/lib", "/usr/lib64/nvidia",
                     "/usr/local/cuda/compat")
"""Where NVIDIA's container toolkit, WSL and CUDA's forward-compatibility package put libcuda."""


def loaded_directory(soname: str, maps: str | None = None) -> str | None:
    """The folder holding `soname` among the libraries this process has mapped (e.g. libcuda after
    torch initialised CUDA): what the loader actually chose. `maps`: /proc/self/maps' text."""
    if maps is None:
        try:
            with open("/proc/self/maps") as handle:
                maps = handle.read()
        except OSError:
            return None
    stem = soname.split(".so")[0] + ".so"
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        path = fields[5] if len(fields) == 6 else ""
        if os.path.basename(path).startswith(stem) and os.path.exists(os.path.join(os.path.dirname(path), soname)):
            return os.path.dirname(path)
    return None


def ldconfig_cache(ldconfig_output: str | None = None) -> dict[str, list[str]]:
    """soname -> the paths the ld.so cache lists for it (`ldconfig -p`; {} where it cannot run)."""
    if ldconfig_output is None:
        ldconfig = shutil.which("ldconfig") or next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig")
                                                     if os.access(p, os.X_OK)), None)
        if ldconfig is None:
            return {}
        try:
            ldconfig_output = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
    cache: dict[str, list[str]] = {}
    for line in ldconfig_output.splitlines():
        name, arrow, path = line.strip().partition(" => ")
        if arrow:
            cache.setdefault(name.split(" (")[0], []).append(path.strip())
    return cache


def _holding(soname: str, folders: list[str]) -> str | None:
    return next((os.path.realpath(d) for d in folders if d and os.path.exists(os.path.join(d, soname))), None)


def library_directory(soname: str, *, ld_library_path: str | None = None, cache: dict[str, list[str]] | None = None,
                      usual: tuple[str, ...] = USUAL_DRIVER_DIRS, maps: str | None = None) -> tuple[str, str] | None:
    """(folder, how it was found) for `soname` as this host's loader finds it, or None: the copy
    already loaded, then LD_LIBRARY_PATH, the ld.so cache, the default folders, the usual driver
    folders. Arguments default to this process's own (tests pass their own)."""
    found = loaded_directory(soname, maps)
    if found:
        return os.path.realpath(found), "loaded by this process"
    path = os.environ.get("LD_LIBRARY_PATH", "") if ld_library_path is None else ld_library_path
    for how, folders in (("LD_LIBRARY_PATH", path.split(":")),
                         ("ld.so cache", [os.path.dirname(p) for p in (ldconfig_cache() if cache is None else cache)
                                          .get(soname, [])]),
                         ("default folders", list(DEFAULT_DIRS)), ("usual driver folders", list(usual))):
        found = _holding(soname, folders)
        if found:
            return found, how
    return None


def program_library_dirs(soname: str, *, ld_library_path: str | None = None,
                         cache: dict[str, list[str]] | None = None, usual: tuple[str, ...] = USUAL_DRIVER_DIRS,
                         maps: str | None = None) -> tuple[str, ...]:
    """The folders a sandboxed program's loader must be given to load `soname`: () when a process
    with no LD_LIBRARY_PATH finds it anyway (ld.so cache, default folders) or nobody can, else the
    folder the host found it in. Arguments as in `library_directory`."""
    cache = ldconfig_cache() if cache is None else cache
    found = library_directory(soname, ld_library_path=ld_library_path, cache=cache, usual=usual, maps=maps)
    if found is None:
        return ()
    plain = {os.path.realpath(os.path.dirname(p)) for p in cache.get(soname, [])}
    plain |= {os.path.realpath(d) for d in DEFAULT_DIRS if os.path.exists(os.path.join(d, soname))}
    if found[0] in plain:
        return ()
    log.info("sandbox: %s is in %s (%s), which a program's loader would not search; granted on its "
             "LD_LIBRARY_PATH", soname, *found)
    return (found[0],)
