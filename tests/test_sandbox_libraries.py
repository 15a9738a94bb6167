"""A shared library the host reaches only through LD_LIBRARY_PATH (libcuda in CUDA container
images) is found as the host's loader finds it, and loads inside the sandbox through a grant."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess

import pytest

from ttd_envs.core.libraries import library_directory, loaded_directory, ldconfig_cache, program_library_dirs
from ttd_envs.core.sandbox import GiB, Grants, Limits, Sandbox

PROBE = ("import ctypes, os\n"
         "def run(soname):\n"
         "    try:\n"
         "        value = ctypes.CDLL(soname).ttd_probe()\n"
         "    except OSError as exc:\n"
         "        value = str(exc)\n"
         "    return {'value': value, 'LD_LIBRARY_PATH': os.environ.get('LD_LIBRARY_PATH'),\n"
         "            'TRITON_LIBCUDA_PATH': os.environ.get('TRITON_LIBCUDA_PATH')}\n")


@pytest.fixture(scope="module")
def driver_dir(tmp_path_factory) -> str:
    """A folder outside the sandbox's view holding a real shared library under two sonames."""
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler (cc) to build a shared library")
    folder = tmp_path_factory.mktemp("driver")
    folder.chmod(0o755)
    source = folder / "probe.c"
    source.write_text("int ttd_probe(void) { return 42; }\n")
    for soname in ("libttdprobe.so.1", "libcuda.so.1"):
        subprocess.run(["cc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(folder / soname), str(source)],
                       check=True, timeout=60)
        (folder / soname).chmod(0o755)
    return str(folder)


def probe(grants: Grants, soname: str) -> dict:
    with Sandbox(preload=(), grants=grants) as box:
        result = box.run_python(PROBE, "run", kwargs={"soname": soname}, preset_modules={},
                                limits=Limits(wall_s=30, memory_bytes=2 * GiB))
    assert result.ok, result.error
    return result.value


def test_the_loader_search_order_is_followed(driver_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "libttdprobe.so.1").write_bytes(b"")
    cache = {"libttdprobe.so.1": [str(elsewhere / "libttdprobe.so.1")]}
    assert library_directory("libttdprobe.so.1", ld_library_path=f"/no/such:{driver_dir}", cache=cache,
                             maps="") == (driver_dir, "LD_LIBRARY_PATH")
    assert library_directory("libttdprobe.so.1", ld_library_path="", cache=cache, maps="") == \
        (str(elsewhere), "ld.so cache")
    assert library_directory("libttdprobe.so.1", ld_library_path="", cache={}, usual=("/no/such", driver_dir),
                             maps="") == (driver_dir, "usual driver folders")
    assert library_directory("libttdprobe.so.1", ld_library_path="", cache={}, usual=(), maps="") is None
    maps = f"7f00-7f10 r-xp 00000000 08:01 42    {driver_dir}/libttdprobe.so.1\n7f10-7f20 rw-p 00000000 00:00 0\n"
    assert loaded_directory("libttdprobe.so.1", maps) == driver_dir
    assert library_directory("libttdprobe.so.1", ld_library_path="", cache={}, usual=(), maps=maps) == \
        (driver_dir, "loaded by this process")


def test_only_a_folder_a_plain_process_would_miss_goes_on_the_program_loader_path(driver_dir):
    only_env = program_library_dirs("libttdprobe.so.1", ld_library_path=driver_dir, cache={}, maps="")
    assert only_env == (driver_dir,)
    cached = {"libttdprobe.so.1": [f"{driver_dir}/libttdprobe.so.1"]}
    assert program_library_dirs("libttdprobe.so.1", ld_library_path=driver_dir, cache=cached, maps="") == ()
    assert program_library_dirs("libttdprobe.so.1", ld_library_path="", cache={}, usual=(), maps="") == ()


def test_ldconfig_output_is_parsed():
    text = ("2 libs found in cache `/etc/ld.so.cache'\n"
            "\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1\n"
            "\tlibcuda.so (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so\n")
    assert ldconfig_cache(text) == {"libcuda.so.1": ["/usr/lib/x86_64-linux-gnu/libcuda.so.1"],
                                    "libcuda.so": ["/usr/lib/x86_64-linux-gnu/libcuda.so"]}
    assert "libc.so.6" in ldconfig_cache()  # this machine's own cache is read


def test_a_library_path_grant_makes_the_library_loadable_where_a_grant_env_cannot(driver_dir):
    granted = probe(Grants(library_paths=(driver_dir,)), "libttdprobe.so.1")
    assert granted == {"value": 42, "LD_LIBRARY_PATH": driver_dir, "TRITON_LIBCUDA_PATH": None}
    # what the kernel problems granted before: the folder visible, LD_LIBRARY_PATH set after the
    # zygote started; the loader read its path at process start, so the library is not found
    late = probe(Grants(read_only_paths=(driver_dir,), env={"LD_LIBRARY_PATH": driver_dir}), "libttdprobe.so.1")
    assert late["LD_LIBRARY_PATH"] == driver_dir and "cannot open shared object file" in late["value"]
    with pytest.raises(ValueError, match="Grants.library_paths"):
        Sandbox(grants=Grants(library_paths=("/no/such/driver",)))


def test_kernel_grants_carry_a_driver_reached_only_through_ld_library_path(driver_dir, monkeypatch):
    from ttd_envs.problems.kernels.problem import gpu_grants

    if loaded_directory("libcuda.so.1") or "libcuda.so.1" in ldconfig_cache():
        pytest.skip("this machine has a real libcuda.so.1 the loader finds: the fake driver would not be chosen")
    monkeypatch.setenv("LD_LIBRARY_PATH", driver_dir)
    grants = gpu_grants()
    assert grants.library_paths == (driver_dir,) and driver_dir in grants.read_only_paths
    assert grants.env["TRITON_LIBCUDA_PATH"] == driver_dir
    seen = probe(dataclasses.replace(grants, devices=()), "libcuda.so.1")  # no /dev/nvidia* on a CPU
    assert seen == {"value": 42, "LD_LIBRARY_PATH": driver_dir, "TRITON_LIBCUDA_PATH": driver_dir}
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    assert os.environ["LD_LIBRARY_PATH"] == "" and "TRITON_LIBCUDA_PATH" not in gpu_grants().env
