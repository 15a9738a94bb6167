"""Per-problem grants widen one Sandbox's view and nothing else; bad grants fail loudly."""

from __future__ import annotations

import dataclasses
import os

import pytest

from ttd_envs.core.sandbox import CACHE_DIR, GiB, Grants, Limits, Sandbox
from ttd_envs.problems.kernels.gpu_grants import gpu_grants, nvidia_driver_dirs

PROBE = ("import os, resource\ndef run(path, device):\n    seen = {}\n"
         "    try:\n        seen['read'] = open(path).read()\n    except OSError:\n        seen['read'] = None\n"
         "    try:\n        open(path, 'a').write('x')\n        seen['write'] = True\n    except OSError:\n"
         "        seen['write'] = False\n    seen['device'] = os.path.exists(device)\n"
         f"    try:\n        open({CACHE_DIR!r} + '/kernel.bin', 'wb').write(b'x')\n        seen['cache'] = True\n"
         "    except OSError:\n        seen['cache'] = False\n"
         "    seen['env'] = os.environ.get('TTD_GRANT_PROBE'), os.environ.get('XDG_CACHE_HOME')\n"
         "    seen['as'] = resource.getrlimit(resource.RLIMIT_AS)[0]\n    return seen\n")


@pytest.fixture(scope="module")
def granted_file(tmp_path_factory):
    directory = tmp_path_factory.mktemp("granted")
    directory.chmod(0o755)
    path = directory / "driver.txt"
    path.write_text("driver library")
    path.chmod(0o644)
    return str(path)


def probe(grants: Grants, granted_file: str) -> dict:
    with Sandbox(preload=(), grants=grants) as box:
        result = box.run_python(PROBE, "run", kwargs={"path": granted_file, "device": "/dev/tty"},
                                preset_modules={}, limits=Limits(wall_s=20, memory_bytes=2 * GiB))
    assert result.ok, result.error
    return result.value


def test_each_grant_applies_and_no_grant_leaves_the_view_closed(granted_file):
    grants = Grants(read_only_paths=(os.path.dirname(granted_file),), devices=("/dev/tt[y]",), writable_cache=True,
                    env={"TTD_GRANT_PROBE": "yes"}, address_space_limit=False)
    granted = probe(grants, granted_file)
    assert granted["read"] == "driver library" and granted["write"] is False  # read-only
    assert granted["device"] and granted["cache"]
    assert granted["env"] == ("yes", CACHE_DIR)
    assert granted["as"] == -1  # RLIM_INFINITY: a CUDA context may reserve what it likes
    plain = probe(Grants(), granted_file)
    assert plain["read"] is None and not plain["device"] and not plain["cache"]
    assert plain["env"] == (None, None) and plain["as"] == 2 * GiB
    with open(granted_file) as handle:
        assert handle.read() == "driver library"


def test_grants_that_name_nothing_are_refused():
    with pytest.raises(ValueError, match="Grants.devices"):
        Sandbox(grants=Grants(devices=("/dev/nvidia-not-here*",)))
    with pytest.raises(ValueError, match="Grants.read_only_paths"):
        Sandbox(grants=Grants(read_only_paths=("/no/such/driver",)))


def test_hidden_paths_show_empty(granted_file):
    directory = os.path.dirname(granted_file)
    secret_dir = os.path.join(directory, "split")
    os.makedirs(secret_dir, exist_ok=True)
    with open(os.path.join(secret_dir, "test.npy"), "w") as handle:
        handle.write("held-out")
    os.chmod(secret_dir, 0o755)
    os.chmod(os.path.join(secret_dir, "test.npy"), 0o644)
    source = ("import os\ndef run(path, folder):\n    return open(path).read(), os.listdir(folder)\n")
    grants = Grants(read_only_paths=(directory,), hidden_paths=(granted_file, secret_dir))
    with Sandbox(preload=(), grants=grants) as box:
        result = box.run_python(source, "run", kwargs={"path": granted_file, "folder": secret_dir}, preset_modules={})
    assert result.ok, result.error
    assert result.value == ("", [])
    with pytest.raises(ValueError, match="Grants.hidden_paths"):
        Sandbox(grants=Grants(hidden_paths=("/no/such/file",)))


MEMFD = "import os\ndef run():\n    os.close(os.memfd_create('cuda'))\n    return 'memfd ok'\n"


def test_only_a_problem_with_the_gpu_grant_may_call_memfd_create():
    """Where init accounts the run (no cgroup), memfds are refused unless the problem's grants
    (a GPU kernel problem's: CUDA makes one when it initialises) allow them."""
    gpu = dataclasses.replace(gpu_grants(), read_only_paths=(), devices=())  # no GPU here: the memfd part
    assert gpu.memfd and not Grants().memfd
    outcomes = {}
    for name, grants in (("gpu", gpu), ("other", Grants())):
        with Sandbox(preload=(), grants=grants, cgroups=False) as box:
            result = box.run_python(MEMFD, "run", preset_modules={}, limits=Limits(wall_s=20, memory_bytes=GiB))
        outcomes[name] = result.value if result.ok else result.error
    print(outcomes)
    assert outcomes["gpu"] == "memfd ok" and "Operation not permitted" in outcomes["other"], outcomes


def test_driver_libraries_are_granted_wherever_they_live(tmp_path):
    """A host whose libcuda lives outside /usr, named only by LD_LIBRARY_PATH, its real file
    elsewhere again (a container toolkit's layout): both places are bound, the first is put on
    the program's LD_LIBRARY_PATH."""
    named, real = tmp_path / "nvidia" / "lib64", tmp_path / "driver" / "550"
    named.mkdir(parents=True)
    real.mkdir(parents=True)
    (real / "libcuda.so.550.54").write_bytes(b"\x7fELF")
    (named / "libcuda.so.1").symlink_to(real / "libcuda.so.550.54")
    (tmp_path / "empty").mkdir()
    bind, library_path = nvidia_driver_dirs(f"{named}:{tmp_path / 'empty'}")
    assert str(named) in bind and str(real) in bind and str(tmp_path / "empty") not in bind
    assert library_path[:1] == [str(named)]
    assert not any(path.startswith("/usr/") for path in bind)  # already in the view
