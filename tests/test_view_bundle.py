"""The viewer's partial Plotly bundle: only the trace types the page draws are registered, anything
the trimming cannot read leaves the bundle whole (slower, never a missing plot)."""

from __future__ import annotations

from importlib import resources

import pytest

from ttd_agent.view.page import CORE_TRACE, PAGE_TRACES, partial_bundle


def module(name: str, body: str) -> str:
    """One module as esbuild's lazy `__commonJS` wrapper writes it in Plotly's bundle."""
    return f'var {name}=W((x{name},m{name})=>{{"use strict";{body}}});'


def trace(name: str, kind: str = "trace") -> str:
    return f'm.exports={{attributes:a(),moduleType:"{kind}",name:"{name}",meta:{{}}}}'


def entry(module_name: str) -> str:
    return f"m.exports={module_name}()"


TOY = "".join([
    "var W=(e,t)=>()=>(t||e((t={exports:{}}).exports,t),t.exports);",
    module("Bi", trace("bar")), module("Be", entry("Bi")),
    module("Xi", trace("box")), module("Xe", entry("Xi")),
    module("Gb", trace("scattergl")), module("Gi", "var q=Gb();q.plot=p();m.exports=q"), module("Ge", entry("Gi")),
    module("Ue", "m.exports=unknown.thing"),
    module("Ci", trace("calendars", "component")), module("Ce", entry("Ci")),
    module("Root", "var P=core();P.register([Be(),Xe(),Ge(),Ue(),Ce()]);m.exports=P"),
    "return Root();",
])


def registered(bundle: str) -> str:
    start = bundle.rindex(".register([") + len(".register([")
    return bundle[start:bundle.index("])", start)]


def test_only_the_kept_types_and_the_unreadable_modules_are_registered() -> None:
    trimmed = partial_bundle(TOY, frozenset({"scatter", "bar", "box"}))
    assert registered(trimmed) == "Be(),Xe(),Ue()"  # scattergl (read through its wrapper) and calendars go
    assert trimmed.replace(registered(trimmed), "") == TOY.replace(registered(TOY), "")  # nothing else changed


def test_a_wrapped_type_is_found_through_the_module_it_extends() -> None:
    assert registered(partial_bundle(TOY, frozenset({"scattergl"}))) == "Ge(),Ue()"


@pytest.mark.parametrize("bundle", [
    TOY.replace(".register([", ".register(modules.concat(["),  # a register call of another shape
    TOY.replace("Ce()]", "Ce(),Zz()]"),  # a module the bundle does not define
    TOY.replace('name:"box"', 'name:"boxes"'),  # a kept type not found
    "not plotly at all",
], ids=["other-register-shape", "undefined-module", "kept-type-missing", "not-a-bundle"])
def test_a_bundle_of_an_unexpected_shape_comes_back_whole(bundle: str) -> None:
    assert partial_bundle(bundle, frozenset({"bar", "box"})) == bundle


def test_the_shipped_plotly_bundle_keeps_the_page_traces_and_drops_the_rest() -> None:
    pytest.importorskip("plotly", reason="the viewer needs the [view] extra (plotly)")
    full = (resources.files("plotly") / "package_data" / "plotly.min.js").read_text(encoding="utf-8")
    before, after = registered(full).split(","), registered(partial_bundle(full, PAGE_TRACES)).split(",")
    assert len(before) > 40, "the full bundle registers every trace type and component"
    assert len(after) == len(PAGE_TRACES - {CORE_TRACE}), f"kept {after} of {len(before)}"
