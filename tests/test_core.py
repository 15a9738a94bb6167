"""State, parsing and the generic env, without running any program."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import ttd_envs
from ttd_envs.core.parsing import extract_code_block
from ttd_envs.core.state import State
from ttd_envs.core.text import CHARSET, sanitize


def test_state_json_round_trip_keeps_arrays_and_lineage():
    root = State(code="x = 1", reward=2.0, score=0.5, construction=np.linspace(0, 1, 7), is_initial=True)
    child = root.child(code="y = 2", reward=3.0, score=0.25, construction=np.arange(6.0).reshape(2, 3),
                       stdout="hi", metadata={"n": np.int64(3)})
    again = State.from_json(child.to_json())
    assert again.id == child.id and again.parent_id == root.id
    assert again.lineage == (root.id,)
    assert again.parent_reward == 2.0 and again.parent_score == 0.5
    np.testing.assert_array_equal(again.construction, np.arange(6.0).reshape(2, 3))
    assert again.construction.dtype == np.float64
    assert again.metadata == {"n": 3}
    grandchild = again.child(code=None, reward=1.0, score=None, construction=None)
    assert grandchild.lineage == (root.id, child.id)


def test_state_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown State fields"):
        State.from_dict({"id": "a", "valuee": 1})


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("```python\na = 1\n```", "python", "a = 1\n"),
        ("first\n```python\na = 1\n```\nthen\n```py\nb = 2\n```\n", "python", "b = 2\n"),
        ("```cpp\nint main(){}\n```\n```python\nx=1\n```", "cpp", "int main(){}\n"),
        ("```python\nunclosed = True\n", "python", None),
        ("no code at all", "python", None),
        ("```\nplain\n```", "python", None),
    ],
)
def test_extract_code_block_takes_the_last_closed_block(text, language, expected):
    assert extract_code_block(text, language) == expected


def test_sanitize_maps_foreign_characters_into_the_charset():
    text = sanitize("ok ✓ \x00 Erdős ≤ 中")
    assert all(c in CHARSET for c in text)
    assert text.startswith("ok ? ? Erdős ≤ ?")


def test_every_id_is_registered_under_ttd_namespace():
    ids = {e.env_id for e in ttd_envs.ENVS}
    assert ids <= set(gym.registry)
    assert all(i.startswith("ttd/") for i in ids)


def test_make_with_module_prefix_imports_the_package():
    env = gym.make("ttd_envs:ttd/ErdosOverlap-v0", initial="record")
    obs, info = env.reset(seed=0)
    assert "C5" in obs and info["state"].is_initial


def test_bad_configuration_raises_at_make_time():
    with pytest.raises(ValueError, match="initial must be"):
        gym.make("ttd/ErdosOverlap-v0", initial="best")
    with pytest.raises(TypeError):
        gym.make("ttd/ErdosOverlap-v0", no_such_option=1)


def test_envs_import_without_torch():
    """ttd_envs must stay light: importing it (and making a math env) never pulls in torch."""
    code = ("import sys, gymnasium, ttd_envs; gymnasium.make('ttd/ErdosOverlap-v0').reset(seed=0); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
