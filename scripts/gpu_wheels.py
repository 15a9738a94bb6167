"""Wheels for a GPU machine that has torch, triton, transformers and peft but no network and no
gymnasium: `scripts/gpu_check.sh --dry-run` runs this on a CPU machine, and the GPU side installs
what it lacks from the folder with `pip install --no-index --no-deps`.

    python3 scripts/gpu_wheels.py [--directory gpu_wheels] [--offline]

What goes in: gymnasium and farama-notifications (pure-Python, under 2 MiB together) at the
versions installed here, so the GPU runs what the CPU suite ran: `pip download --no-deps`, or,
when PyPI cannot be reached (`--offline`, or the download fails), the installed copy repacked as a
wheel from its RECORD. Not the project itself: the checkout travels and is imported from there
(PYTHONPATH), and a second copy in site-packages would sit inside the sandbox's view, where
programs could read the problems' source and data (only the imported copy is hidden).
Prints the folder's size and the command to run on the GPU machine.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import importlib.metadata
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THIRD_PARTY = ("gymnasium", "farama-notifications")
"""What the project needs at run time and the GPU machine's image lacks (the device tool's list of
the image's packages); numpy, scipy, numba, rich, cloudpickle and pytest are there."""
SKIPPED_METADATA = ("INSTALLER", "REQUESTED", "direct_url.json", "RECORD")
LOGS = "/tmp/gpu_check"
GPU_COMMAND = (f"PYTHONUNBUFFERED=1 GPU_CHECK_LOGS={LOGS} bash scripts/gpu_check.sh; rc=$?; "
               f'tar -czf "$OUT/gpu_check_logs.tgz" -C {LOGS} .; exit $rc')
"""For the device tool's `run` (its $OUT comes back); elsewhere `bash scripts/gpu_check.sh` alone."""


def wheel_stem(name: str, version: str) -> str:
    return f"{name.replace('-', '_').lower()}-{version}"


def existing(directory: Path, name: str, version: str) -> Path | None:
    """A wheel of `name` at `version` already in `directory` (names compared case-insensitively)."""
    stem = wheel_stem(name, version)
    return next((p for p in sorted(directory.glob("*.whl")) if p.name.lower().startswith(stem + "-")), None)


def repack(name: str, directory: Path) -> Path:
    """A wheel of the installed pure-Python distribution `name`, from the files its RECORD lists."""
    dist = importlib.metadata.distribution(name)
    wheel_text = dist.read_text("WHEEL") or ""
    if "Root-Is-Purelib: true" not in wheel_text or "py3-none-any" not in wheel_text:
        raise SystemExit(f"gpu_wheels: {name} {dist.version} is not a pure-Python wheel; download it on a machine "
                         f"with network access (pip download --no-deps {name}=={dist.version})")
    info = next((str(f).split("/")[0] for f in dist.files or [] if str(f).split("/")[0].endswith(".dist-info")),
                f"{wheel_stem(dist.metadata['Name'], dist.version)}.dist-info")  # the name the files use
    target = directory / f"{wheel_stem(dist.metadata['Name'], dist.version)}-py3-none-any.whl"
    rows: list[tuple[str, str, str]] = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(dist.files or [], key=str):
            relative = str(file)
            if "__pycache__" in relative or relative.startswith("..") or relative.endswith(".pyc"):
                continue
            if relative.split("/")[0].endswith(".dist-info") and relative.split("/")[-1] in SKIPPED_METADATA:
                continue
            data = Path(file.locate()).read_bytes()
            archive.writestr(relative, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append((relative, f"sha256={digest}", str(len(data))))
        record = io.StringIO()
        csv.writer(record, lineterminator="\n").writerows(rows + [(f"{info}/RECORD", "", "")])
        archive.writestr(f"{info}/RECORD", record.getvalue())
    return target


def fetch(name: str, directory: Path, offline: bool) -> tuple[Path, str]:
    """The wheel of `name` at its installed version: kept, downloaded or repacked (and how)."""
    version = importlib.metadata.version(name)
    prefix = name.replace("-", "_").lower() + "-"
    for stale in directory.glob("*.whl"):  # one version of each, or pip refuses the whole install
        if stale.name.lower().startswith(prefix) and not stale.name.lower().startswith(wheel_stem(name, version) + "-"):
            stale.unlink()
    found = existing(directory, name, version)
    if found:
        return found, "kept"
    if not offline:
        download = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                                   "--timeout", "15", "--retries", "1", "-d", str(directory), f"{name}=={version}"],
                                  capture_output=True, text=True)
        found = existing(directory, name, version)
        if download.returncode == 0 and found:
            return found, "downloaded"
    return repack(name, directory), "repacked from the installed copy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--directory", default=str(ROOT / "gpu_wheels"), help="where the wheels go (gitignored)")
    parser.add_argument("--offline", action="store_true", help="never ask PyPI: repack the installed copies")
    args = parser.parse_args()
    directory = Path(args.directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    managed = tuple(name.replace("-", "_").lower() + "-" for name in THIRD_PARTY)
    for other in directory.glob("*.whl"):  # the folder holds only what travels
        if not other.name.lower().startswith(managed):
            other.unlink()
    wheels = [fetch(name, directory, args.offline) for name in THIRD_PARTY]
    for path, how in wheels:
        print(f"gpu_wheels: {path.name} ({path.stat().st_size / 2**20:.1f} MiB, {how})")
    total = sum(p.stat().st_size for p in directory.glob("*.whl"))
    print(f"gpu_wheels: {directory} holds {total / 2**20:.1f} MiB of wheels")
    try:
        carry = str(directory.relative_to(ROOT))
    except ValueError:
        carry = str(directory)
        print(f"gpu_wheels: {directory} is outside the checkout; copy it into the checkout (a gitignored folder) "
              f"to carry it")
    print(f"gpu_wheels: on the GPU machine, with {carry}/ copied beside the checkout: bash scripts/gpu_check.sh")
    print("gpu_wheels: with the device tool, call:")
    print(f"run {json.dumps({'command': GPU_COMMAND, 'carry': [carry], 'timeout_s': 600})}")


if __name__ == "__main__":
    main()
