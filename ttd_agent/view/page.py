"""The page: one HTML document with every script and style inlined, so an exported file opens with
no network (nothing from a CDN). Plotly comes from the `plotly` PyPI package (the `[view]` extra),
which ships its browser bundle `plotly.min.js`; the page's own script and style live in `static/`."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

PLOTLY_HINT = "the run viewer draws with Plotly: pip install 'ttd[view]' (or pip install plotly)"


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """The browser bundle the `plotly` package ships (read once per process)."""
    try:
        return (resources.files("plotly") / "package_data" / "plotly.min.js").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise ImportError(PLOTLY_HINT) from error


def _static(name: str) -> str:
    return (resources.files("ttd_agent.view") / "static" / name).read_text(encoding="utf-8")


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element (every '<' escaped: nothing in it can close it); the page reads it
    with JSON.parse, which is faster than evaluating a large object literal."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def build_page(payload: dict[str, Any], poll_ms: int | None = None) -> str:
    """The whole page with `payload` inlined; `poll_ms` set: it polls `version.json` and reloads
    `data.json` when the run changed (the served page), None: a static export."""
    title = f"ttd run: {payload.get('env') or payload.get('run_dir')}"
    return "".join([
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'><link rel='icon' href='data:,'>",
        f"<title>{_escape(title)}</title><style>{_static('style.css')}</style></head><body>",
        "<div id='app'><p class='loading'>loading the run...</p></div>",
        f"<script>{plotly_js()}</script>",
        f"<script type='application/json' id='ttd-data' data-poll-ms='{poll_ms or 0}'>{_script_json(payload)}</script>",
        f"<script>{_static('app.js')}</script></body></html>",
    ])


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
