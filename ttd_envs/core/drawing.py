"""Pictures of a construction in a neutral form, for the run viewer (`ttd-agent view`).

A problem may define `drawing(construction) -> dict | None`; the viewer draws what it returns and
shows the construction as text when the method is missing, returns None or raises. Two kinds:

    {"kind": "series", "title": str, "x_label": str, "y_label": str,
     "series": [{"name": str, "x": [...], "y": [...], "shape": "line" | "step" | "bar"}, ...]}
    {"kind": "circles", "title": str, "box": [x0, y0, x1, y1], "circles": [[x, y, r], ...]}

Plain lists of floats only (JSON), no plotting library: the problem says what to draw, the
viewer decides how. Long series are thinned to `MAX_POINTS` so a page stays light.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

MAX_POINTS = 2000

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
