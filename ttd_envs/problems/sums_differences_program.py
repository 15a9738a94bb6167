"""`evaluate_set` as SumsDifferences programs get it, compiled when the sandbox's zygote imports
this module. Programs cannot see numba's on-disk cache (the sandbox hides `__pycache__`), so the
cached counter would recompile, 1.2 s, in every program and then fail to save; compiled here once,
every program forked from the zygote starts with it."""

from __future__ import annotations

from typing import Any

import numba

from ttd_envs.problems.sums_differences import _count_window_sweep, theta

_sweep = numba.njit("int64(int64[::1], boolean, int64)", nogil=True)(_count_window_sweep.py_func)


def evaluate_set(values: Any) -> float:
    """theta(values) (a lower bound, as the reward is computed); ValueError saying why for an invalid set."""
    return theta(values, _sweep)
