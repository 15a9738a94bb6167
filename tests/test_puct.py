"""The PUCT state buffer: hand-computed scores and backups, selection rules, insertion, persistence."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from ttd_agent.puct import StateBuffer, rank_prior
from ttd_envs.core.state import State


def child(parent: State, reward: float, construction: object, code: str | None = None) -> State:
    return parent.child(code=code, reward=reward, score=None, construction=construction)


def build_tree() -> tuple[StateBuffer, dict[str, State]]:
    """root (unevaluated) -> a 0.5, b 0.8 (c 0.2 and a failure dropped); a -> a1 0.9, a2 0.6."""
    root = State(id="root", reward=None, construction=[0], is_initial=True)
    buffer = StateBuffer([root], capacity=100, children_per_parent=2, c=1.0)
    a, b, c = child(root, 0.5, [1], "a"), child(root, 0.8, [2], "b"), child(root, 0.2, [3], "c")
    assert [s.id for s in buffer.record_expansion(root, [a, None, b, c])] == [b.id, a.id]
    a1, a2 = child(a, 0.9, [11], "a1"), child(a, 0.6, [12], "a2")
    assert [s.id for s in buffer.record_expansion(a, [a2, a1])] == [a1.id, a2.id]
    return buffer, {"root": root, "a": a, "b": b, "c": c, "a1": a1, "a2": a2}


def related(x: State, y: State) -> bool:
    return x.id == y.id or x.id in y.lineage or y.id in x.lineage


def test_rank_prior_gives_best_n_worst_1_and_ties_their_average_rank() -> None:
    np.testing.assert_allclose(rank_prior(np.array([0.5, 0.1, 0.9])), [2 / 6, 1 / 6, 3 / 6])
    np.testing.assert_allclose(rank_prior(np.array([1.0, 1.0, 0.0])), [2.5 / 6, 2.5 / 6, 1 / 6])


def test_scores_after_one_expansion_by_hand() -> None:
    root = State(id="root", reward=None, construction=[0], is_initial=True)
    buffer = StateBuffer([root], children_per_parent=2)
    a, b = child(root, 0.5, [1]), child(root, 0.8, [2])
    buffer.record_expansion(root, [a, b, child(root, 0.2, [3])])
    # N = 3: ranks root 1, a 2, b 3 (sum 6); scale = 0.8 - 0.5 over non-initial states;
    # T = 1; n_root = 1; Q(root) = m_root = 0.8, Q(a), Q(b) = their rewards.
    scale, root_t = 0.3, math.sqrt(2)
    assert buffer.score(root.id) == pytest.approx(0.8 + scale * (1 / 6) * root_t / 2, rel=1e-12)
    assert buffer.score(a.id) == pytest.approx(0.5 + scale * (2 / 6) * root_t / 1, rel=1e-12)
    assert buffer.score(b.id) == pytest.approx(0.8 + scale * (3 / 6) * root_t / 1, rel=1e-12)


def test_scores_visits_and_maxima_of_a_two_level_tree_by_hand() -> None:
    buffer, s = build_tree()
    saved = buffer.to_dict()
    assert saved["expansions"] == 2
    assert saved["visits"] == {"root": 2, s["a"].id: 1}
    assert saved["best_reached"] == {"root": 0.9, s["a"].id: 0.9}
    # N = 5: ranks root 1, a 2, a2 3, b 4, a1 5 (sum 15); scale = 0.9 - 0.5; T = 2.
    scale, root_t = 0.4, math.sqrt(3)
    expected = {
        "root": 0.9 + scale * (1 / 15) * root_t / 3,
        "a": 0.9 + scale * (2 / 15) * root_t / 2,
        "b": 0.8 + scale * (4 / 15) * root_t,
        "a1": 0.9 + scale * (5 / 15) * root_t,
        "a2": 0.6 + scale * (3 / 15) * root_t,
    }
    for name, value in expected.items():
        assert buffer.score(s[name].id) == pytest.approx(value, rel=1e-12), name


def test_max_and_visits_propagate_to_every_ancestor() -> None:
    buffer, s = build_tree()
    deep = child(s["a1"], 0.95, [111])
    buffer.record_expansion(s["a1"], [deep])
    saved = buffer.to_dict()
    assert saved["visits"] == {"root": 3, s["a"].id: 2, s["a1"].id: 1}
    assert saved["best_reached"] == {"root": 0.95, s["a"].id: 0.95, s["a1"].id: 0.95}
    # a worse group later never lowers a maximum
    buffer.record_expansion(s["a1"], [child(s["a1"], 0.1, [112])])
    assert buffer.to_dict()["best_reached"][s["a"].id] == 0.95


def test_failed_rollouts_count_as_visits_but_not_as_rewards() -> None:
    buffer, s = build_tree()
    assert buffer.record_expansion(s["b"], [None, None, None]) == []
    saved = buffer.to_dict()
    assert saved["expansions"] == 3
    assert saved["visits"] == {"root": 3, s["a"].id: 1, s["b"].id: 1}
    assert s["b"].id not in saved["best_reached"]  # Q(b) is still R(b)
    # N = 5 as before, T = 3, n_b = 1
    assert buffer.score(s["b"].id) == pytest.approx(0.8 + 0.4 * (4 / 15) * 2 / 2, rel=1e-12)


def test_puct_select_blocks_lineages_then_repeats_the_picks() -> None:
    buffer, s = build_tree()
    rng = np.random.default_rng(0)
    # by score: a1, b, a, root, a2; picking a1 blocks its ancestors a and root
    assert [x.id for x in buffer.select(3, rng)] == [s["a1"].id, s["b"].id, s["a2"].id]
    assert [x.id for x in buffer.select(5, rng)] == [s[n].id for n in ("a1", "b", "a2", "a1", "b")]
    assert [x.id for x in buffer.select(1, rng)] == [s["a1"].id]


def grow_random_tree(buffer: StateBuffer, rng: np.random.Generator, steps: int, group: int = 4) -> list[float]:
    """Expand random buffer states with random groups; returns every valid reward produced."""
    seen = []
    for step in range(steps):
        states = buffer.states()
        parent = states[int(rng.integers(len(states)))]
        children: list[State | None] = []
        for j in range(group):
            if rng.random() < 0.2:
                children.append(None)
                continue
            reward = float(rng.normal())
            seen.append(reward)
            children.append(child(parent, reward, [step, j]))
        buffer.record_expansion(parent, children)
    return seen


@pytest.mark.parametrize("sampler", ["puct", "greedy"])
def test_batches_are_lineage_disjoint_while_disjoint_states_exist(sampler: str) -> None:
    rng = np.random.default_rng(3)
    roots = [State(id=f"root{i}", reward=0.0, is_initial=True) for i in range(3)]
    buffer = StateBuffer(roots, children_per_parent=3, sampler=sampler, epsilon=0.5)  # type: ignore[arg-type]
    grow_random_tree(buffer, rng, steps=60)
    for count in (1, 2, 4, 8, 16, 64):
        batch = buffer.select(count, rng)
        assert len(batch) == count
        distinct = list({x.id: x for x in batch}.values())
        for i, x in enumerate(distinct):
            for y in distinct[i + 1:]:
                assert not related(x, y)
        if len(distinct) < count:  # repeats only once every buffer state is blocked
            assert all(any(related(x, p) for p in distinct) for x in buffer.states())


def test_only_the_top_k_children_of_a_parent_stay() -> None:
    buffer, s = build_tree()
    root = s["root"]
    d, e = child(root, 0.85, [4]), child(root, 0.1, [5])
    # root's children compete together: b 0.8 and a 0.5 already there, d 0.85 and e 0.1 new
    assert [x.id for x in buffer.record_expansion(root, [e, d])] == [d.id]
    ids = {x.id for x in buffer.states()}
    assert {d.id, s["b"].id} <= ids and s["a"].id not in ids and e.id not in ids
    assert {s["a1"].id, s["a2"].id} <= ids  # a's children keep their places
    # an evicted parent can still be expanded: its ancestors still present get the backup
    a3 = child(s["a"], 0.7, [13])
    assert [x.id for x in buffer.record_expansion(s["a"], [a3])] == [a3.id]
    assert {s["a1"].id, a3.id} <= {x.id for x in buffer.states()}
    assert s["a2"].id not in {x.id for x in buffer.states()}
    assert buffer.to_dict()["visits"]["root"] == 4


def test_ties_for_a_place_go_to_the_incumbent() -> None:
    buffer, s = build_tree()
    assert buffer.record_expansion(s["root"], [child(s["root"], 0.5, [6])]) == []


def test_duplicates_are_dropped() -> None:
    buffer, s = build_tree()
    b = s["b"]
    same_construction = child(b, 0.95, [2], "different code")
    same_code = child(b, 0.97, [99], "a1")
    assert buffer.record_expansion(b, [same_construction, same_code]) == []
    # within one group the best of equal children survives
    low, high = child(b, 0.3, np.array([7.0, 8.0])), child(b, 0.4, np.array([7.0, 8.0]))
    assert [x.id for x in buffer.record_expansion(b, [low, high])] == [high.id]
    # the same child reported twice is inserted once
    assert buffer.record_expansion(b, [high]) == []
    assert len(buffer) == 6


def test_capacity_drops_lowest_rewards_but_never_initial_states() -> None:
    roots = [State(id="r0", reward=-1.0, is_initial=True), State(id="r1", reward=-2.0, is_initial=True)]
    buffer = StateBuffer(roots, capacity=3, children_per_parent=8)
    x, y, z = child(roots[0], 0.1, [1]), child(roots[0], 0.3, [2]), child(roots[0], 0.2, [3])
    assert [s.id for s in buffer.record_expansion(roots[0], [x, y, z])] == [y.id]
    assert [s.id for s in buffer.states()] == ["r0", "r1", y.id]
    full = StateBuffer(roots, capacity=2)
    assert full.record_expansion(roots[1], [child(roots[1], 5.0, [1])]) == []
    assert full.best().reward == 5.0  # found, though there was no room to keep it


def test_best_never_decreases_and_is_the_best_reward_seen() -> None:
    rng = np.random.default_rng(7)
    root = State(id="root", reward=-10.0, is_initial=True)
    buffer = StateBuffer([root], capacity=5, children_per_parent=1)
    best_so_far, seen = -10.0, []
    for _ in range(40):
        seen += grow_random_tree(buffer, rng, steps=1)
        assert buffer.best().reward >= best_so_far
        best_so_far = buffer.best().reward
        assert best_so_far == max([-10.0, *seen])


def test_greedy_with_epsilon_zero_takes_the_best_rewards() -> None:
    buffer, s = build_tree()
    greedy = StateBuffer.from_dict({**buffer.to_dict(), "sampler": "greedy", "epsilon": 0.0})
    assert [x.id for x in greedy.select(3, np.random.default_rng(0))] == [s["a1"].id, s["b"].id, s["a2"].id]


def test_greedy_explores_every_state_with_epsilon_one() -> None:
    buffer, _ = build_tree()
    greedy = StateBuffer.from_dict({**buffer.to_dict(), "sampler": "greedy", "epsilon": 1.0})
    rng = np.random.default_rng(0)
    firsts = {greedy.select(1, rng)[0].id for _ in range(200)}
    assert firsts == {x.id for x in buffer.states()}


def test_fixed_always_starts_from_the_initial_states() -> None:
    roots = [State(id="r0", reward=0.0, is_initial=True), State(id="r1", reward=0.0, is_initial=True)]
    buffer = StateBuffer(roots, sampler="fixed")
    buffer.record_expansion(roots[0], [child(roots[0], 1.0, [1])])
    assert [x.id for x in buffer.select(5, np.random.default_rng(0))] == ["r0", "r1", "r0", "r1", "r0"]
    assert len(buffer) == 3


def test_save_load_gives_identical_scores_selection_and_future(tmp_path: Path) -> None:
    buffer, s = build_tree()
    buffer.record_expansion(s["b"], [None, child(s["b"], 0.7, np.array([[1.0, 2.0]]))])
    buffer.save(tmp_path / "buffer.json")
    loaded = StateBuffer.load(tmp_path / "buffer.json")
    assert loaded.to_dict() == json.loads(json.dumps(buffer.to_dict()))
    for state in buffer.states():
        assert loaded.score(state.id) == buffer.score(state.id)
    for count in (1, 3, 7):
        picks = [x.id for x in buffer.select(count, np.random.default_rng(count))]
        assert [x.id for x in loaded.select(count, np.random.default_rng(count))] == picks
    # both continue identically, and dedup keys survived the round trip
    for buf in (buffer, loaded):
        parent = next(x for x in buf.states() if x.id == s["a1"].id)
        new = child(parent, 1.0, [21]).with_updates(id="new")
        duplicate_of_b = child(parent, 2.0, [2]).with_updates(id="duplicate")
        assert [x.id for x in buf.record_expansion(parent, [new, duplicate_of_b])] == ["new"]
        assert buf.best().id == "duplicate"
    assert loaded.to_dict() == json.loads(json.dumps(buffer.to_dict()))


def test_save_writes_a_temporary_file_then_renames_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buffer, _ = build_tree()
    target = tmp_path / "buffer.json"
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def spying_replace(src: str, dst: str) -> None:
        renames.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spying_replace)
    buffer.save(target)
    [(src, dst)] = renames
    assert dst == str(target) and Path(src).parent == tmp_path and src != dst
    assert os.listdir(tmp_path) == ["buffer.json"]


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    buffer, s = build_tree()
    target = tmp_path / "buffer.json"
    buffer.save(target)
    before = target.read_text()
    buffer.record_expansion(s["b"], [child(s["b"], 0.99, [42])])

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        buffer.save(target)
    assert target.read_text() == before
    assert os.listdir(tmp_path) == ["buffer.json"]


def test_bad_arguments_are_refused() -> None:
    buffer, s = build_tree()
    with pytest.raises(ValueError, match="parent"):
        buffer.record_expansion(s["b"], [child(s["a"], 0.3, [77])])
    with pytest.raises(ValueError, match="finite"):
        buffer.record_expansion(s["b"], [child(s["b"], math.nan, [78])])
    with pytest.raises(ValueError, match="at least one rollout"):
        buffer.record_expansion(s["b"], [])
    with pytest.raises(ValueError, match="count"):
        buffer.select(0, np.random.default_rng(0))
    with pytest.raises(KeyError, match="not in the buffer"):
        buffer.score(s["c"].id)
    with pytest.raises(ValueError, match="capacity"):
        StateBuffer([State(), State()], capacity=1)
    with pytest.raises(ValueError, match="sampler"):
        StateBuffer([State()], sampler="random")  # type: ignore[arg-type]
