"""A real cgroup v2 host for the tests: a small QEMU guest (software emulation) running this host's
own Python through a read-only 9p share.

Our machines mount cgroup v1, so the sandbox's cgroup v2 modes can only be tested on another
kernel. The guest is built from Debian packages (qemu-system-x86, busybox-static; the kernel is
fetched with `apt-get download` and unpacked with `dpkg-deb`, never installed), cached in
`~/.cache/ttd-guest` (or `$TTD_GUEST_CACHE`), and boots in about 2 s (8-10 s on a loaded machine).
Only `python tests/guest.py --build` downloads (scripts/test.sh runs it while it installs the
system packages); the tests never do, and skip with the reason when nothing was built. KVM does not work on our
machines (its PVM flavour runs only kernels built for it), so the guest runs under TCG, where
Python is ~10x slower than on the host: boot once per test session and run many things per command.

The guest's init mounts the host's root read-only at its own `/` (switch_root onto the 9p share,
so the sandbox's pivot_root sees a real mount), with a tmpfs on /tmp, /run, /mnt and /dev/shm, a
cgroup2 hierarchy on /sys/fs/cgroup, and a second, writable share (`Guest.exchange` on the host,
`/mnt/xchg` in the guest) through which commands go in and their output comes back.

Running an attack list in the guest (what tests/test_sandbox_cgroup_v2.py does):

    guest = Guest.boot()                    # or the session fixture `cgroup_v2_guest`
    out = guest.python("tests/guest_attacks.py", "--mode", "root", timeout_s=300)
    results = json.loads(out)

`Guest.python(script, *args)` runs this host's interpreter (`sys.executable`) in the guest with the
worktree as the working directory; `Guest.shell(command)` runs a shell command. Both raise
`GuestCommandFailed` with the output's tail when the command exits non-zero. `tests/guest_attacks.py`
is the one Python process per mode that runs a whole list of attacks and prints JSON.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GUEST_MOUNT = "/mnt/xchg"
MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "9pnet",
           "9pnet_virtio", "netfs", "fscache", "9p")
BOOT_TIMEOUT_S = 60.0


class GuestUnavailable(RuntimeError):
    """The guest cannot be built or booted here; the message says why (tests skip with it)."""


class GuestCommandFailed(RuntimeError):
    """A command in the guest exited non-zero."""


def cache_dir() -> Path:
    return Path(os.environ.get("TTD_GUEST_CACHE", Path.home() / ".cache" / "ttd-guest"))


def _run(argv: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GuestUnavailable(f"`{' '.join(argv)}` failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return done.stdout


def _kernel_package() -> str:
    """The kernel package the `linux-image-amd64` metapackage points at (e.g. linux-image-6.1.0-57-amd64)."""
    if shutil.which("apt-cache") is None:
        raise GuestUnavailable("no apt-cache: the guest's kernel comes from Debian's linux-image-amd64 package")
    found = re.findall(r"Depends: (linux-image-[0-9][^\s]*-amd64)\b", _run(["apt-cache", "depends", "linux-image-amd64"]))
    if not found:
        raise GuestUnavailable("apt-cache knows no linux-image-amd64 kernel (run `apt-get update` as root)")
    return found[0]


def _unpacked_kernel(cache: Path, download_allowed: bool) -> Path:
    """The kernel package unpacked under the cache (downloaded once with `apt-get download`)."""
    done = sorted(cache.glob("linux-image-*/done"))
    if done and not download_allowed:
        return done[-1].parent
    package = _kernel_package()
    unpacked = cache / package
    if (unpacked / "done").exists():
        return unpacked
    download = cache / "download"
    download.mkdir(parents=True, exist_ok=True)
    debs = list(download.glob(f"{package}_*.deb"))
    if not debs:
        if not download_allowed:
            raise GuestUnavailable(f"the guest's kernel is not in {cache}: run `python tests/guest.py --build` once "
                                   "(scripts/test.sh does; it downloads Debian's kernel package)")
        _run(["apt-get", "download", package], cwd=download)
        debs = list(download.glob(f"{package}_*.deb"))
    if not debs:
        raise GuestUnavailable(f"`apt-get download {package}` left no .deb in {download}")
    shutil.rmtree(unpacked, ignore_errors=True)
    _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)])
    (unpacked / "done").write_text("")
    return unpacked


def _vmlinux(unpacked: Path) -> Path:
    """The uncompressed kernel, cut out of vmlinuz at the xz magic (booting it saves ~2.6 s)."""
    target = unpacked / "vmlinux"
    if target.exists():
        return target
    vmlinuz = next((unpacked / "boot").glob("vmlinuz-*"))
    data = vmlinuz.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")
    if start < 0:
        raise GuestUnavailable(f"{vmlinuz} holds no xz-compressed kernel")
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    kernel = decompressor.decompress(data[start:])
    target.with_suffix(".tmp").write_bytes(kernel)
    target.with_suffix(".tmp").rename(target)
    return target


_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for module in {modules}; do /bin/busybox insmod /modules/$module.ko; done
/bin/busybox mkdir -p /newroot
/bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 host /newroot
cd /newroot
/bin/busybox mount -t proc proc proc
/bin/busybox mount -t sysfs sys sys
/bin/busybox mount -t cgroup2 -o nsdelegate cgroup2 sys/fs/cgroup
/bin/busybox mount -t devtmpfs dev dev
/bin/busybox mount -t tmpfs -o mode=1777 tmp tmp
/bin/busybox mount -t tmpfs run run
/bin/busybox mount -t tmpfs mnt mnt
/bin/busybox mkdir -p dev/shm dev/pts mnt/xchg
/bin/busybox mount -t tmpfs -o mode=1777 shm dev/shm
/bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=512000 xchg mnt/xchg
exec /bin/busybox switch_root /newroot /bin/sh -c 'exec /bin/sh {mount}/loop.sh'
"""

# Runs under the host's /bin/sh once the guest's root is the host's: each `N.job` file becomes
# `N.out` (stdout and stderr) and then `N.rc` (its exit status).
_LOOP = """export HOME=/tmp PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8
echo ready > {mount}/ready
while :; do
  for job in {mount}/*.job; do
    [ -e "$job" ] || continue
    name=${{job%.job}}
    mv "$job" "$name.running"
    (cd "$(cat "$name.cwd")" && /bin/sh "$name.running") > "$name.out" 2>&1
    echo $? > "$name.rc.tmp"
    mv "$name.rc.tmp" "$name.rc"
  done
  sleep 0.05
done
"""


def _initrd(cache: Path, unpacked: Path) -> Path:
    """busybox-static with the 9p modules and our init, as a gzip'd newc cpio (cached by content)."""
    busybox = shutil.which("busybox")
    if busybox is None or b"/ld-linux" in Path(busybox).read_bytes()[:4096]:  # a dynamic one needs a loader
        raise GuestUnavailable("no static busybox: install busybox-static (scripts/system-packages.d/qemu-guest.txt)")
    init = _INIT.format(modules=" ".join(MODULES), mount=GUEST_MOUNT)
    version = next((unpacked / "lib" / "modules").iterdir())
    key = hashlib.sha256((init + str(version) + str(os.path.getsize(busybox))).encode()).hexdigest()[:16]
    target = cache / f"initrd-{key}.gz"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        root = Path(scratch)
        for folder in ("bin", "proc", "sys", "dev", "modules"):
            (root / folder).mkdir()
        shutil.copy(busybox, root / "bin" / "busybox")
        (root / "init").write_text(init)
        (root / "init").chmod(0o755)
        for module in MODULES:
            found = [p for p in version.rglob(f"{module}.ko*") if p.name.split(".ko")[0] == module]
            if not found:
                raise GuestUnavailable(f"kernel module {module} missing from {version}")
            data = found[0].read_bytes()
            (root / "modules" / f"{module}.ko").write_bytes(lzma.decompress(data) if found[0].suffix == ".xz" else data)
        listing = "\n".join(["."] + [str(p.relative_to(root)) for p in sorted(root.rglob("*"))]) + "\n"
        archive = subprocess.run([busybox, "cpio", "-o", "-H", "newc"], cwd=root, input=listing.encode(),
                                 capture_output=True, check=True).stdout
        with gzip.open(target.with_suffix(".tmp"), "wb", compresslevel=1) as handle:
            handle.write(archive)
        target.with_suffix(".tmp").rename(target)
    return target


def build(download_allowed: bool = False) -> tuple[Path, Path]:
    """(kernel, initrd), built once and cached; GuestUnavailable says what is missing."""
    if shutil.which("qemu-system-x86_64") is None:
        raise GuestUnavailable("no qemu-system-x86_64: install the packages in scripts/system-packages.d/qemu-guest.txt")
    cache = cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GuestUnavailable(f"cannot create the guest cache {cache}: {exc}") from None
    unpacked = _unpacked_kernel(cache, download_allowed)
    return _vmlinux(unpacked), _initrd(cache, unpacked)


class Guest:
    """One booted guest; commands run one at a time through the exchange folder."""

    def __init__(self, process: subprocess.Popen[bytes], exchange: Path) -> None:
        self.process = process
        self.exchange = exchange
        self._jobs = itertools.count()

    @classmethod
    def boot(cls, memory_mib: int = 2048, cpus: int = 2) -> Guest:
        kernel, initrd = build()
        exchange = Path(tempfile.mkdtemp(prefix="ttd-guest-"))
        (exchange / "loop.sh").write_text(_LOOP.format(mount=GUEST_MOUNT))
        argv = ["qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-m", str(memory_mib),
                "-smp", str(cpus), "-nographic", "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
                "-append", "console=ttyS0 quiet panic=-1",
                "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
                "-virtfs", f"local,path={exchange},mount_tag=xchg,security_model=none,multidevs=remap"]
        console = open(exchange / "console.log", "wb")  # noqa: SIM115 - qemu writes it while the guest runs
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
        console.close()
        guest = cls(process, exchange)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while not (exchange / "ready").exists():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = guest.console_tail()
                guest.close()
                raise GuestUnavailable(f"the guest did not boot within {BOOT_TIMEOUT_S:g} s: {tail}")
            time.sleep(0.05)
        return guest

    def console_tail(self, chars: int = 1500) -> str:
        try:
            return (self.exchange / "console.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def shell(self, command: str, timeout_s: float = 120.0, cwd: str | os.PathLike[str] | None = None) -> str:
        """Run `command` with the guest's (the host's) /bin/sh as root; return its output."""
        name = self.exchange / str(next(self._jobs))
        name.with_suffix(".cwd").write_text(str(cwd or os.getcwd()))
        name.with_suffix(".tmp").write_text(command + "\n")
        name.with_suffix(".tmp").rename(name.with_suffix(".job"))
        deadline = time.monotonic() + timeout_s
        rc_path = name.with_suffix(".rc")
        while not rc_path.exists():
            if self.process.poll() is not None:
                raise GuestCommandFailed(f"the guest died while running {command!r}: {self.console_tail()}")
            if time.monotonic() > deadline:
                raise GuestCommandFailed(f"{command!r} did not finish in the guest within {timeout_s:g} s; output: "
                                         f"{self._read(name.with_suffix('.out'))[-2000:]}")
            time.sleep(0.05)
        output = self._read(name.with_suffix(".out"))
        code = int(rc_path.read_text().strip() or "-1")
        if code != 0:
            raise GuestCommandFailed(f"{command!r} exited {code} in the guest: {output[-3000:]}")
        return output

    def python(self, script: str, *args: str, timeout_s: float = 300.0) -> str:
        """Run this host's Python (`sys.executable`) on `script` in the guest, from the worktree."""
        quoted = " ".join(_quote(part) for part in (sys.executable, script, *args))
        return self.shell(quoted, timeout_s=timeout_s, cwd=Path(__file__).resolve().parents[1])

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        shutil.rmtree(self.exchange, ignore_errors=True)


def _quote(part: str) -> str:
    return "'" + part.replace("'", "'\\''") + "'"


def _main() -> None:
    """`python tests/guest.py --build`: fetch and build the guest once (needs Debian's archive).
    `python tests/guest.py 'command'`: boot, run one shell command, print its output (for debugging)."""
    if sys.argv[1:] == ["--build"]:
        try:
            print(*build(download_allowed=True))
        except GuestUnavailable as exc:
            sys.exit(f"the cgroup v2 guest cannot be built here: {exc}")
        return
    started = time.perf_counter()
    guest = Guest.boot()
    print(f"booted in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    try:
        print(guest.shell(" ".join(sys.argv[1:]) or "cat /sys/fs/cgroup/cgroup.controllers"))
    finally:
        guest.close()


if __name__ == "__main__":
    _main()
