"""Pictures of a construction in a neutral form, for the run viewer (`ttd-agent view`).

A problem may define `drawing(construction) -> dict | None`; the viewer draws what it returns and
shows the construction as text when the method is missing, returns None or raises. A problem
whose states hold programs instead (AHC) may define `program_drawing(code) -> dict`, which runs the
program to get something to draw and raises `NoDrawing` (one line: why) when it cannot. Three kinds:

    {"kind": "series", "title": str, "x_label": str, "y_label": str,
     "series": [{"name": str, "x": [...], "y": [...], "shape": "line" | "step" | "bar"}, ...]}
    {"kind": "circles", "title": str, "box": [x0, y0, x1, y1], "circles": [[x, y, r], ...]}
    {"kind": "plane", "title": str, "box": [x0, y0, x1, y1],
     "points": [{"name": str, "x": [...], "y": [...]}, ...],
     "paths": [{"name": str, "x": [...], "y": [...]}, ...]}    (closed: the last vertex joins the first)

Any kind may carry "caption": str, a line the page shows under it (where the picture comes from).
Plain lists of numbers only (JSON), no plotting library: the problem says what to draw, the
viewer decides how. Long series are thinned to `MAX_POINTS`, point sets to `MAX_PLANE_POINTS`,
so a page stays light.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

MAX_POINTS = 2000
MAX_PLANE_POINTS = 10_000


class NoDrawing(Exception):
    """Why there is no picture, in one line the page shows in its place (a program that failed)."""

Shape = Literal["line", "step", "bar"]


def series(name: str, x: Any, y: Any, shape: Shape = "line") -> dict[str, Any]:
    """One named series, thinned to at most MAX_POINTS points (every k-th, the last one kept)."""
    xs, ys = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if xs.size != ys.size:
        raise ValueError(f"series {name!r}: x has {xs.size} points, y has {ys.size}")
    if xs.size > MAX_POINTS:
        keep = np.unique(np.r_[np.arange(0, xs.size, -(-xs.size // MAX_POINTS)), xs.size - 1])
        xs, ys = xs[keep], ys[keep]
    return {"name": name, "x": xs.tolist(), "y": ys.tolist(), "shape": shape}


def series_drawing(title: str, x_label: str, y_label: str, *lines: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "series", "title": title, "x_label": x_label, "y_label": y_label, "series": list(lines)}


def circles_drawing(title: str, circles: Any, box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
                    ) -> dict[str, Any]:
    """Circles as rows [x, y, r] inside the rectangle `box` (x0, y0, x1, y1)."""
    rows = np.asarray(circles, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 3:
        raise ValueError(f"expected circles as rows [x, y, r], got shape {rows.shape}")
    return {"kind": "circles", "title": title, "box": list(box), "circles": rows.tolist()}


def _coordinates(name: str, xy: Any, limit: int | None) -> dict[str, Any]:
    """Rows [x, y] as two lists (integers stay integers: a smaller page), every k-th row past `limit`."""
    rows = np.asarray(xy)
    if rows.ndim != 2 or rows.shape[1] != 2 or not (np.issubdtype(rows.dtype, np.integer)
                                                    or np.issubdtype(rows.dtype, np.floating)):
        raise ValueError(f"{name!r}: expected numeric rows [x, y], got shape {rows.shape} of {rows.dtype}")
    if limit is not None and rows.shape[0] > limit:
        rows = rows[::-(-rows.shape[0] // limit)]
    if np.issubdtype(rows.dtype, np.floating) and not np.isfinite(rows).all():
        raise ValueError(f"{name!r}: coordinates must be finite")
    return {"name": name, "x": rows[:, 0].tolist(), "y": rows[:, 1].tolist()}


def point_set(name: str, xy: Any) -> dict[str, Any]:
    """Named points (rows [x, y]), thinned to MAX_PLANE_POINTS."""
    return _coordinates(name, xy, MAX_PLANE_POINTS)


def closed_path(name: str, xy: Any) -> dict[str, Any]:
    """A named polygon: its vertices in order (rows [x, y]); the page closes it. Never thinned."""
    return _coordinates(name, xy, None)


def plane_drawing(title: str, box: tuple[float, float, float, float], points: list[dict[str, Any]],
                  paths: list[dict[str, Any]]) -> dict[str, Any]:
    """Point sets and closed paths in the rectangle `box` (x0, y0, x1, y1), drawn at equal scale."""
    return {"kind": "plane", "title": title, "box": list(box), "points": points, "paths": paths}
