"""Timing checks that hold on a busy machine (2 shared cores at load 16 run the suite): each bound
leaves margin against load, and each check prints what it compared, pass or fail."""

from __future__ import annotations


def within(seconds: float, limit: float, what: str) -> None:
    """Assert `seconds` < `limit`; the two numbers are printed either way (pytest shows them on a
    failure, and with -s or -rP on a pass)."""
    print(f"timing: {what}: {seconds:.3f} s measured, limit {limit:.3f} s")
    assert seconds < limit, f"{what}: {seconds:.2f} s measured, over the limit of {limit:.2f} s"


def at_least(value: float, floor: float, what: str) -> None:
    """Assert `value` >= `floor`, printing both (a measured time that must reach a floor)."""
    print(f"timing: {what}: {value:.3f} s measured, floor {floor:.3f} s")
    assert value >= floor, f"{what}: {value:.2f} s measured, under the floor of {floor:.2f} s"
