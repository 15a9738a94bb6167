"""`python -m ttd_envs.verify`: every shipped fixture scores as listed (score on the last line,
exit 0); invalid or unreadable files exit non-zero with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from ttd_envs.verify import EXIT_INVALID, EXIT_USAGE, main, score_file

DATA = Path(str(resources.files("ttd_envs.data.math")))
ROOT = Path(__file__).resolve().parents[1]

FIXTURES = [
    ("ttd/AutocorrelationAC1-v0", "ttt_ac1_sequence.json", 1.5028628982558263),
    ("ttd/AutocorrelationAC1-v0", "baselines/ac1_alphaevolve_v2_1319.json", 1.503163554681561),
    ("ttd/AutocorrelationAC1-v0", "baselines/ac1_thetaevolve_1319.json", 1.5031324359797773),
    ("ttd/AutocorrelationAC1-v0", "baselines/ac1_alphaevolve_v1_600.json", 1.5052939684401607),
    ("ttd/AutocorrelationAC1-v0", "baselines/ac1_thetaevolve_wo_rl_200.json", 1.5068026727114598),
    ("ttd/AutocorrelationAC1-v0", "baselines/ac1_prev_human_208.json", 1.5097201507458793),
    ("ttd/AutocorrelationAC2-v0", "ttt_ac2_sequence.json", 0.9591797711482716),
    ("ttd/AutocorrelationAC2-v0", "baselines/ac2_alphaevolve_50000.json", 0.9610210777840243),
    ("ttd/CirclePacking26-v0", "our_best_circles.json", 2.6359773947542573),
    ("ttd/CirclePacking32-v0", "cp32_generated_from_new_our_best_32.json", 2.93957249964032),
    ("ttd/ErdosOverlap-v0", "ttt_erdos_sequence.json", 0.3808753232177188),
    ("ttd/ErdosOverlap-v0", "baselines/erdos_alphaevolve_95.json", 0.38092303510845016),
    ("ttd/ErdosOverlap-v0", "baselines/erdos_haugland2016_51.json", 0.38092685343308713),
]


@pytest.mark.parametrize("env_id,name,expected", FIXTURES, ids=[f[1] for f in FIXTURES])
def test_every_fixture_scores_as_listed(env_id, name, expected, capsys):
    assert main([env_id, str(DATA / name)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert abs(float(lines[-1]) - expected) < 1e-12
    assert float(lines[-1]) == score_file(env_id, DATA / name)


def test_cli_as_a_subprocess_prints_the_score_last():
    run = subprocess.run([sys.executable, "-m", "ttd_envs.verify", "ttd/AutocorrelationAC1-v0",
                          str(DATA / "ttt_ac1_sequence.json")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    assert abs(float(run.stdout.strip().splitlines()[-1]) - 1.5028628982558263) < 1e-12


@pytest.mark.parametrize("env_id,content,reason", [
    ("ttd/AutocorrelationAC1-v0", {"sequence": [1.0, -2.0]}, "non-negative"),
    ("ttd/AutocorrelationAC2-v0", {"sequence": []}, "empty"),
    ("ttd/AutocorrelationAC2-v0", {"heights": [1.0]}, '"sequence" list'),
    ("ttd/CirclePacking26-v0", {"circles": [[0.3, 0.5, 0.25], [0.7, 0.5, 0.25]]}, "expected 26 circles"),
    ("ttd/CirclePacking26-v0", {"circles": [[0.5, 0.5]] * 26}, "[x, y, r] rows"),
    ("ttd/ErdosOverlap-v0", {"sequence": [0.5, 1.5]}, "[0, 1]"),
])
def test_invalid_files_exit_non_zero_with_the_reason(tmp_path, capsys, env_id, content, reason):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    assert main([env_id, str(path)]) == EXIT_INVALID
    captured = capsys.readouterr()
    assert captured.out == "" and "invalid construction" in captured.err and reason in captured.err


def test_overlapping_record_is_rejected(tmp_path, capsys):
    circles = json.loads((DATA / "our_best_circles.json").read_text())["circles"]
    circles[3][2] += 1e-6
    path = tmp_path / "grown.json"
    path.write_text(json.dumps({"circles": circles}))
    assert main(["ttd/CirclePacking26-v0", str(path)]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert "circle 3" in err or "and 3 overlap" in err


def test_unreadable_file_and_unknown_env_are_usage_errors(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    assert main(["ttd/AutocorrelationAC1-v0", str(path)]) == EXIT_USAGE
    assert "cannot read" in capsys.readouterr().err
    assert main(["ttd/AutocorrelationAC1-v0", str(tmp_path / "missing.json")]) == EXIT_USAGE
    assert main(["ttd/AHC039-v0", str(DATA / "ttt_ac1_sequence.json")]) == EXIT_USAGE
    assert "not a math env" in capsys.readouterr().err


def test_a_training_runs_best_state_is_verified_with_the_runs_options(tmp_path, capsys):
    """What run.sh leaves (a run directory) verifies as it is, at the run's n, and names what is wrong."""
    from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer

    run = tmp_path / "run"
    DiscoveryTrainer(DiscoveryConfig(env="ttd/LABS-v0", env_kwargs={"n": 20}, groups_per_step=2, group_size=4,
                                     steps=1, embedded={"d_model": 16, "n_layer": 1, "n_head": 2},
                                     edit_prior=False, run_dir=str(run))).run()
    best = json.loads((run / "best.json").read_text())["state"]
    for given in (run, run / "best.json"):
        assert main(["ttd/LABS-v0", str(given)]) == 0
        out = capsys.readouterr().out
        assert float(out.strip().splitlines()[-1]) == best["score"] and len(best["construction"]) == 20
        assert "record: 26 " in out, "the record of the run's n (E* = 26 at N = 20), not of the default 32"
    assert main(["ttd/LABS-v0", str(run), "--env-arg", "n=32"]) == EXIT_INVALID
    assert "has 20 signs but n = 32; for that length give --env-arg n=20" in capsys.readouterr().err
    assert main(["ttd/ErdosOverlap-v0", str(run)]) == EXIT_USAGE
    assert "best state of a ttd/LABS-v0 run, not of ttd/ErdosOverlap-v0" in capsys.readouterr().err
    (run / "config.json").write_text("{damaged")
    assert main(["ttd/LABS-v0", str(run)]) == EXIT_USAGE
    assert "config.json is damaged" in capsys.readouterr().err


def test_the_bare_signs_that_best_prints_verify_as_a_labs_sequence(tmp_path, capsys):
    """`ttd-agent best` prints a LABS sequence as bare signs: that text, saved, verifies."""
    signs = "+++++--++-+-+"  # a Barker sequence: energy 6 at n = 13
    (tmp_path / "best.txt").write_text(signs + "\n")
    assert main(["ttd/LABS-v0", str(tmp_path / "best.txt"), "--env-arg", "n=13"]) == 0
    assert float(capsys.readouterr().out.strip().splitlines()[-1]) == 6.0
    (tmp_path / "damaged.txt").write_text(signs + "x")
    assert main(["ttd/LABS-v0", str(tmp_path / "damaged.txt"), "--env-arg", "n=13"]) == EXIT_USAGE
    assert "cannot read" in capsys.readouterr().err


def test_a_missing_argument_is_one_line_naming_help(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["ttd/LABS-v0"])
    err = capsys.readouterr().err
    assert stopped.value.code == EXIT_USAGE and err.count("\n") == 1
    assert err.startswith("error: the following arguments are required: file") and "--help" in err
