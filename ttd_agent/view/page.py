"""The page: one HTML document with every script and style inlined, so an exported file opens with
no network (nothing from a CDN). Plotly comes from the `plotly` PyPI package (the `[view]` extra),
which ships its browser bundle `plotly.min.js`; the page's own script and style live in `static/`."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

PLOTLY_HINT = "the run viewer draws with Plotly: pip install 'ttd[view]' (or pip install plotly)"

PAGE_TRACES = frozenset({"scatter", "bar", "box"})
"""The Plotly trace types app.js draws; scatter is in Plotly's core, the others are registered."""
CORE_TRACE = "scatter"  # registered by Plotly's core itself, never by the final register([...]) call

_MODULE = re.compile(r"var ([\w$]+)=[\w$]+\(\([\w$]+,[\w$]+\)=>\{")  # esbuild's lazy module wrapper
_REGISTER = re.compile(r"\.register\(\[((?:[\w$]+\(\),)*[\w$]+\(\))\]\)")
_NAMED_MODULE = re.compile(r'moduleType:"(?:trace|component)",name:"(\w+)"')
_CALL = re.compile(r"([\w$]+)\(\)")


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """Plotly's browser bundle with only the trace types of `PAGE_TRACES` registered (read once per process)."""
    try:
        bundle = (resources.files("plotly") / "package_data" / "plotly.min.js").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise ImportError(PLOTLY_HINT) from error
    return partial_bundle(bundle, PAGE_TRACES)


def partial_bundle(bundle: str, keep: frozenset[str]) -> str:
    """`bundle` registering only the trace types and components in `keep`, like Plotly's own partial
    bundles. The full bundle runs every trace and component module when it loads (47 in plotly.js 4.1: maps,
    3-D, WebGL), which is half of its start-up time in the browser; the bundle wraps each module in a lazy
    function, so a module left out of the final `register([...])` call never runs. A module whose name
    cannot be read is kept, and the bundle comes back whole when its shape is not the one expected or a
    type in `keep` is not found: the price of a surprise is speed, never a missing plot."""
    registers = list(_REGISTER.finditer(bundle))
    if not registers:
        return bundle
    register = registers[-1]
    found = list(_MODULE.finditer(bundle))
    ends = [later.start() for later in found[1:]] + [len(bundle)]  # a module's text runs to the next one
    texts = {match.group(1): bundle[match.start():end] for match, end in zip(found, ends)}
    modules = [call[:-2] for call in register.group(1).split(",")]
    if any(module not in texts for module in modules):
        return bundle
    names = [_module_name(texts, module) for module in modules]
    if not (keep - {CORE_TRACE}) <= set(names):
        return bundle
    kept = [module for module, name in zip(modules, names) if name is None or name in keep]
    calls = ",".join(f"{module}()" for module in kept)
    return bundle[:register.start(1)] + calls + bundle[register.end(1):]


def _module_name(texts: dict[str, str], module: str, depth: int = 0) -> str | None:
    """The trace or component name a module registers: read from its own text, or from the module it
    wraps (an entry point re-exports a trace's index, which may extend another module)."""
    text = texts[module]
    named = _NAMED_MODULE.findall(text)
    if len(named) == 1:
        return named[0]
    if named or depth == 3:
        return None
    wrapped = [call for call in _CALL.findall(text[text.index("{") + 1:]) if call in texts and call != module]
    return _module_name(texts, wrapped[0], depth + 1) if wrapped else None


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
