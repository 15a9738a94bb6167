"""The record table: every env has one, every shipped construction scores what the table says,
the docs show the table, and certificates call records, ties and forgeries what they are."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ttd_envs import certificates, records, verify
from ttd_envs.problems.circle_packing import CirclePacking26
from ttd_envs.registration import ENVS, load_target
from ttd_envs.verify import score_file

ROOT = Path(__file__).resolve().parents[1]
VERIFIED = [(name, entry) for name in records.available() for entry in records.load_records(name).entries
            if entry.verified]
DOC_PAGES = {path: re.findall(r"<!-- records:(\w+) -->", path.read_text()) for path in (ROOT / "docs/envs").glob("*.md")}


def test_every_env_with_a_record_reads_it_from_the_table():
    for entry in ENVS:
        if entry.vector_env:
            continue
        cls = load_target(entry.target)
        problem = cls() if getattr(cls, "defaults", None) is None else cls
        if problem.record is None:
            continue
        table = records.load_records(entry.env_id)
        instance = getattr(problem, "record_instance", {})
        assert problem.record == table.record(instance), entry.env_id
        assert table.env_id == entry.env_id


def test_every_entry_has_who_when_source_and_the_table_is_valid():
    for name in records.available():
        table = records.load_records(name)
        for entry in table.entries:
            assert entry.who and entry.source and re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", entry.when), (name, entry)
            assert not re.search(r"https?://", entry.source)


@pytest.mark.parametrize("name,entry", VERIFIED, ids=[f"{n}:{e.who}:{e.instance}" for n, e in VERIFIED])
def test_every_verified_construction_scores_its_stated_value(name, entry):
    env_id = records.load_records(name).env_id
    score = score_file(env_id, entry.path(), entry.instance)
    assert abs(score - entry.value) <= 1e-12 * max(1.0, abs(entry.value)), (score, entry.value)


def test_verify_cli_prints_the_table_value():
    entry = records.load_records("ErdosOverlap").best(verified=True)
    out = subprocess.run([sys.executable, "-m", "ttd_envs.verify", "ttd/ErdosOverlap-v0", str(entry.path())],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert float(out.strip().splitlines()[-1]) == pytest.approx(entry.value, abs=1e-15)
    assert "Together AI, 2026-03; repository togethercomputer/EinsteinArena-new-SOTA" in " ".join(out.split())


# Constructions copied as data from togethercomputer/EinsteinArena-new-SOTA (Together AI's, and the
# 604-vector kissing configuration of the EinsteinArena agents published there): (env id, env kwargs,
# shipped file, the value its docs page and record entry give, whether it is the record to beat).
TOGETHER = [
    ("ttd/ErdosOverlap-v0", {}, "baselines/erdos_together_600.json", 0.38087031058621895, True),
    ("ttd/AutocorrelationAC3-v0", {}, "baselines/ac3_together_400.json", 1.454554862698333, False),
    ("ttd/Heilbronn-v0", {"region": "convex", "n": 14}, "heilbronn_convex_14_together.json", 0.02783558051755369, True),
    ("ttd/MinMaxDistance-v0", {}, "minmax_2d_16_together.json", 12.889229907717517, True),
    ("ttd/KissingNumber-v0", {}, "kissing_11_604_einsteinarena.json", 604.0, True),
    ("ttd/AutocorrelationAC2-v0", {}, "baselines/ac2_together_100000.json", 0.9612055422690102, True),
    ("ttd/AutocorrelationAC1-v0", {}, "baselines/ac1_together_30000.json", 1.5028628587053108, True),
]


@pytest.mark.parametrize("env_id,kwargs,filename,value,is_record", TOGETHER, ids=[row[0] for row in TOGETHER])
def test_each_together_construction_verifies_to_its_documented_value(env_id, kwargs, filename, value, is_record, capsys):
    path = ROOT / "ttd_envs/data/math" / filename
    source = json.loads(path.read_text())["source"]
    assert "togethercomputer/EinsteinArena-new-SOTA" in source and re.search(r"commit [0-9a-f]{7}", source)
    assert verify.main([env_id, str(path)] + [f"--env-arg={k}={v}" for k, v in kwargs.items()]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == repr(value)
    table = records.load_records(env_id)
    instance = {} if env_id == "ttd/MinMaxDistance-v0" else kwargs
    entry = next(e for e in table.for_instance(instance) if e.verified and "EinsteinArena-new-SOTA" in e.source)
    assert entry.verified and entry.value == value and entry.path() == path
    assert (table.best(instance, verified=True) is entry) == is_record
    page = next(p for p, names in DOC_PAGES.items() if records.table_name(env_id) in names)
    assert f"{value:.10g}" in page.read_text() and filename.split("/")[-1] in page.read_text()


def test_erdos_record_is_together_ai_with_simpletes_claim_beside_it():
    """The verified-only rule: SimpleTES's lower 0.380868 has no file that reaches it, so it is shown
    as a claim; Together AI's verified 0.3808703106 is the bar, and initial="record" starts there."""
    from ttd_envs.problems.erdos import ErdosOverlap, load_record_construction

    record = ErdosOverlap.record
    assert record.score == 0.38087031058621895 and record.holder.startswith("Together AI, 2026-03")
    assert "better claim without a verified construction: 0.380868 (SimpleTES, 2026-04" in record.holder
    text = records.load_records("ErdosOverlap").best(verified=True).path().read_text()
    assert load_record_construction().tolist() == json.loads(text)["sequence"]


def test_a_better_claim_without_a_verified_construction_is_named_but_not_the_record():
    table = records.load_records("AutocorrelationAC2")
    record = table.record()
    assert record.score == 0.9612055422690102 and record.holder.startswith("Together AI, 2026-03")
    assert "better claim without a verified construction: 0.96272" in record.holder
    assert "best claimed 0.96272" in table.summary()


def test_loader_refuses_a_verified_entry_without_its_file():
    raw = json.loads((ROOT / "ttd_envs/data/records/ErdosOverlap.json").read_text())
    raw["entries"][2]["construction_file"] = None
    with pytest.raises(records.RecordsError, match="needs its construction_file"):
        records.parse_table(raw, "test")


@pytest.mark.parametrize("page", [p for p, names in DOC_PAGES.items() if names], ids=lambda p: p.name)
def test_docs_pages_show_the_record_table(page):
    text = page.read_text()
    for name in DOC_PAGES[page]:
        block = text.split(f"<!-- records:{name} -->\n", 1)[1].split("\n<!-- /records -->", 1)[0]
        assert block.strip() == records.markdown_table(name).strip(), f"regenerate with python -m ttd_envs.records --markdown {name}"


def test_readme_rows_show_each_best_verified_record_with_who_and_when():
    readme = (ROOT / "README.md").read_text()
    for name in records.available():
        table = records.load_records(name)
        best = table.best(verified=True) or table.best(verified=False)
        if best is None:  # per-instance tables (LABS) have no default row
            continue
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{table.env_id}`"))
        assert f"{best.value:.10g}"[:9] in row and best.who in row and best.when in row, (name, row)


# -- certificates --------------------------------------------------------------------------------
def _planted_table(monkeypatch, name: str, value: float) -> None:
    """The record table of `name` (higher is better) with every entry lowered to at most `value`:
    a planted old record that the shipped construction beats."""
    real = records.load_records(name)
    planted = replace(real, entries=tuple(replace(e, value=min(e.value, value)) for e in real.entries))
    monkeypatch.setattr(certificates, "load_records", lambda _: planted)


def test_a_planted_record_gets_a_certificate_that_verify_rechecks(tmp_path, monkeypatch, capsys):
    shipped = records.load_records("CirclePacking26").best(verified=True)
    _planted_table(monkeypatch, "CirclePacking26", 2.6359)  # the packing now beats the record by 8e-5
    out = tmp_path / "certificate.json"
    assert verify.main(["ttd/CirclePacking26-v0", str(shipped.path()), "--certify", str(out)]) == 0
    certificate = json.loads(out.read_text())
    assert certificate["verdict"] == "record" and certificate["score"]["exact"]
    assert certificate["record"]["value"] == 2.6359 and certificate["verifier"]["package"].startswith("ttd ")
    assert certificate["score"]["lower"].startswith("2.63598308492107126")
    capsys.readouterr()
    assert verify.main(["ttd/CirclePacking26-v0", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "certificate holds" in printed and "verdict today: record" in printed
    forged = dict(certificate, score=dict(certificate["score"], lower="2.64", upper="2.64"))
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    assert verify.main(["ttd/CirclePacking26-v0", str(tmp_path / "forged.json")]) == verify.EXIT_INVALID
    assert "does not hold" in capsys.readouterr().err


def test_recheck_reports_the_verdict_against_the_table(tmp_path, monkeypatch, capsys):
    shipped = records.load_records("CirclePacking26").best(verified=True)
    _planted_table(monkeypatch, "CirclePacking26", 2.6359)
    certificate = certificates.certify("ttd/CirclePacking26-v0", CirclePacking26(), json.loads(shipped.path().read_text()))
    holds, report = certificates.recheck(certificate, CirclePacking26())
    assert holds and "verdict today: record" in report


def test_a_gain_within_the_tolerance_is_a_tie_not_a_record(monkeypatch):
    """With TTT-Discover's packing as the record, inflating its radii by 0.4e-12 (inside the 1e-12
    check tolerance) raises Σr by about 1e-11: above the record as a float, but inside the table's
    1e-10 tie tolerance, so a tie."""
    problem = CirclePacking26()
    ttt = next(e for e in records.load_records("CirclePacking26").entries if e.who == "TTT-Discover")
    _planted_table(monkeypatch, "CirclePacking26", ttt.value)
    circles = np.asarray(json.loads(ttt.path().read_text())["circles"])
    circles[:, 2] += 0.4e-12
    data = {"circles": circles.tolist()}
    assert problem.score_construction(data) > ttt.value
    certificate = certificates.certify("ttd/CirclePacking26-v0", problem, data)
    assert certificate["verdict"] == "tie" and 0 < certificate["gain_over_record"] < 1e-10


def test_exact_scores_agree_with_the_float_scorers():
    for name in ("ErdosOverlap", "AutocorrelationAC1", "CirclePacking32"):
        table = records.load_records(name)
        entry = min((e for e in table.entries if e.verified), key=lambda e: e.path().stat().st_size)
        problem = verify.make_math_problem(table.env_id)
        bound = problem.exact_score(json.loads(entry.path().read_text()))
        assert abs(float(bound.lower) - entry.value) < 1e-14 and bound.lower == bound.upper, name


def test_the_denoising_row_compares_records_in_the_metric_the_env_scores():
    """The env's score is mse_norm (what `ttd-agent envs` shows): the row's record and its human
    baseline are both mse_norm values; the headline metric is named wherever it is quoted."""
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `ttd/Denoising-v0`"))
    entries = {entry.who.split()[0]: entry.value for entry in records.load_records("Denoising").entries}
    assert f"mse_norm (normalised MSE), 0 outside the Poisson gate; record {entries['TTT-Discover']:.2f}" in row
    assert f"vs MAGIC {entries['MAGIC']:.2f}" in row
    headline = row.split("headline", 1)
    assert len(headline) == 2 and "mse_norm" in headline[1] and "poisson_norm" in headline[1]
    assert "0.71" not in headline[0] and "0.64" not in headline[0], "headline values quoted as mse_norm"
