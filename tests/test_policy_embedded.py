"""The tiny embedded policy: exact on-policy log-probs, output format, determinism, checkpoints, learning."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ttd_agent.policy.base import LossConfig, Policy, TrainItem
from ttd_agent.policy.embedded import (
    BOS,
    EOS,
    EmbeddedConfig,
    EmbeddedPolicy,
    decode,
    encode,
)
from ttd_envs.core.problem import EmbeddedSpec


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The model is tiny: one intra-op thread is faster, and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def flat(groups):
    return [s for g in groups for s in g]


def test_tokenizer_round_trip_and_unknown_characters():
    assert decode(encode("x = [1, 2]\n\tok")) == "x = [1, 2]\n\tok"
    assert decode(encode("π≈3")) == "??3"
    assert decode([BOS, *encode("ab"), EOS]) == "ab"


def test_it_is_a_policy_and_builds_from_a_spec():
    config = EmbeddedConfig.from_spec(EmbeddedSpec(alphabet="+-", length=7), d_model=32)
    assert (config.alphabet, config.length, config.d_model) == ("+-", 7, 32)
    policy = EmbeddedPolicy(config)
    assert isinstance(policy, Policy) and policy.kind == "embedded"
    with pytest.raises(ValueError, match="not printable ASCII"):
        EmbeddedConfig(alphabet="ab\u00e9")


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.6])
def test_on_policy_logprobs_equal_sampled_logprobs(temperature):
    policy = EmbeddedPolicy(EmbeddedConfig(seed=1))
    prompts = ["", "short", "a rather longer prompt, so the batch is left-padded"]
    samples = flat(policy.sample(prompts, 5, temperature=temperature, max_new_tokens=12))
    again = policy.logprobs(samples)
    for s, lp in zip(samples, again):
        assert lp.shape == s.logprobs.shape == (len(s.completion_ids),)
        np.testing.assert_allclose(lp, s.logprobs, atol=1e-5)
        assert s.entropy is not None and np.all(s.entropy >= 0) and np.all(np.isfinite(s.entropy))
    # So the first update is exactly on-policy: every ratio is 1.
    stats = policy.update([TrainItem(s, 1.0) for s in samples], LossConfig(clip_eps=0.2))
    assert abs(stats["ratio_max"] - 1) < 1e-5 and stats["clip_fraction"] == 0.0
    assert stats["tokens"] == sum(len(s.completion_ids) for s in samples)


def test_alphabet_and_fixed_length():
    policy = EmbeddedPolicy(EmbeddedConfig(alphabet="01", length=9))
    samples = flat(policy.sample(["x", "yy"], 16, temperature=1.3, max_new_tokens=3))  # length wins
    assert len(samples) == 32
    for s in samples:
        assert len(s.text) == 9 and set(s.text) <= {"0", "1"} and s.finished
        assert len(s.completion_ids) == 9 and EOS not in s.completion_ids
        assert np.all(s.logprobs <= 0) and np.all(s.entropy <= np.log(2) + 1e-6)


def test_free_length_stops_at_eos_and_keeps_it_in_the_ids():
    policy = EmbeddedPolicy(EmbeddedConfig(alphabet="ab"))
    samples = flat(policy.sample(["p"], 64, temperature=1.0, max_new_tokens=4))
    finished = [s for s in samples if s.finished]
    cut = [s for s in samples if not s.finished]
    assert finished and cut  # EOS has probability ~1/3 per token at init
    for s in finished:
        assert s.completion_ids[-1] == EOS and EOS not in s.completion_ids[:-1]
        assert s.text == decode(s.completion_ids[:-1]) and len(s.logprobs) == len(s.text) + 1
    for s in cut:
        assert len(s.completion_ids) == 4 and EOS not in s.completion_ids and len(s.text) == 4
    assert all(set(s.text) <= {"a", "b"} for s in samples)


def test_long_prompts_are_left_truncated_to_fit_the_context():
    policy = EmbeddedPolicy(EmbeddedConfig(max_context=24))
    [[s]] = policy.sample(["0123456789" * 5], 1, temperature=1.0, max_new_tokens=8)
    assert s.prompt_ids[0] == BOS and decode(s.prompt_ids) == ("0123456789" * 5)[-15:]
    assert len(s.prompt_ids) + len(s.completion_ids) <= 24
    with pytest.raises(ValueError, match="max_context"):
        policy.sample(["x"], 1, temperature=1.0, max_new_tokens=24)


def test_greedy_sampling_is_the_argmax():
    policy = EmbeddedPolicy(EmbeddedConfig(alphabet="abc", length=6))
    a, b = flat(policy.sample(["q"], 3, temperature=0.0, max_new_tokens=6))[:2]
    assert a.text == b.text and np.all(a.logprobs == 0)
    assert policy.temperature == 1.0  # greedy calls leave the training temperature alone


def test_same_seed_same_samples_and_the_global_rng_is_untouched():
    state = torch.get_rng_state()
    texts = [[s.text for s in flat(EmbeddedPolicy(EmbeddedConfig(seed=seed)).sample(["x"], 8, temperature=1.0,
                                                                                    max_new_tokens=10))]
             for seed in (3, 3, 4)]
    assert texts[0] == texts[1] and texts[0] != texts[2]
    assert torch.equal(state, torch.get_rng_state())


def test_save_load_continues_exactly(tmp_path):
    config = EmbeddedConfig(alphabet="xyz", length=5, seed=2)
    policy = EmbeddedPolicy(config)
    samples = flat(policy.sample(["s"], 8, temperature=0.9, max_new_tokens=5))
    policy.update([TrainItem(s, float(i % 3 - 1)) for i, s in enumerate(samples)], LossConfig(kl_coef=0.1))
    policy.save(tmp_path / "ckpt")

    restored = EmbeddedPolicy.from_checkpoint(tmp_path / "ckpt")
    assert restored.temperature == 0.9
    for p in (policy, restored):
        p.update([TrainItem(s, 1.0) for s in samples], LossConfig(kl_coef=0.1))  # optimizer state matters here
    a = flat(policy.sample(["s", "t"], 4, temperature=0.9, max_new_tokens=5))
    b = flat(restored.sample(["s", "t"], 4, temperature=0.9, max_new_tokens=5))
    assert [s.text for s in a] == [s.text for s in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.logprobs, y.logprobs)

    with pytest.raises(ValueError, match="different embedded policy"):
        EmbeddedPolicy(EmbeddedConfig(alphabet="xy", length=5)).load(tmp_path / "ckpt")


def test_kl_to_the_reference_starts_at_zero_and_grows():
    policy = EmbeddedPolicy(EmbeddedConfig(alphabet="+-", length=8))
    loss = LossConfig(kl_coef=0.05, kl_mode="k3")
    kls = []
    for _ in range(5):
        samples = flat(policy.sample(["k"], 32, temperature=1.0, max_new_tokens=8))
        adv = [s.text.count("+") - 4.0 for s in samples]
        kls.append(policy.update([TrainItem(s, a) for s, a in zip(samples, adv)], loss)["kl"])
    assert kls[0] == pytest.approx(0.0, abs=1e-9) and kls[-1] > 1e-4


def test_imitate_learns_a_tiny_mapping():
    policy = EmbeddedPolicy(EmbeddedConfig(alphabet="xy", seed=0))
    final = policy.imitate([("a", "xy"), ("b", "yx")], steps=150, batch_size=16)
    assert final < 0.05
    greedy = policy.sample(["a", "b"], 1, temperature=0.0, max_new_tokens=5)
    assert [g[0].text for g in greedy] == ["xy", "yx"]
    cool = policy.sample(["a", "b"], 50, temperature=0.5, max_new_tokens=5)
    accuracy = np.mean([s.text == want for g, want in zip(cool, ["xy", "yx"]) for s in g])
    assert accuracy > 0.95
    # The KL reference is now the imitated policy (the prior RL starts from).
    stats = policy.update([TrainItem(s, 1.0) for s in flat(cool)], LossConfig(kl_coef=0.1))
    assert stats["kl"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reinforce_raises_the_reward(seed):
    """Reward = number of '+' in 16 characters of "+-"; 30 updates with mean-baseline advantages."""
    policy = EmbeddedPolicy(EmbeddedConfig(alphabet="+-", length=16, seed=seed))

    def mean_reward(n: int) -> float:
        return float(np.mean([s.text.count("+") for s in policy.sample(["count"], n, temperature=1.0,
                                                                        max_new_tokens=16)[0]]))

    before = mean_reward(256)
    for _ in range(30):
        group = policy.sample(["count"], 32, temperature=1.0, max_new_tokens=16)[0]
        rewards = np.array([s.text.count("+") for s in group], dtype=float)
        policy.update([TrainItem(s, float(a)) for s, a in zip(group, rewards - rewards.mean())], LossConfig())
    assert mean_reward(256) > before + 4  # starts near 8 of 16


# ---- flip mode: the completion names the positions of the prompt to switch


def flip_policy(**overrides):
    return EmbeddedPolicy(EmbeddedConfig(alphabet="+-", length=12, write="flips", max_flips=4, d_model=32,
                                         n_layer=1, **overrides))


def test_flips_name_increasing_positions_and_the_answer_switches_exactly_those():
    policy = flip_policy(seed=3)
    prompts = ["+-+-++--+++-", "------------"]
    samples = flat(policy.sample(prompts, 16, temperature=1.3, max_new_tokens=99))
    for s in samples:
        *positions, stop = s.completion_ids
        assert stop == EOS and 1 <= len(positions) <= 4
        assert positions == sorted(set(positions)) and all(0 <= p < 12 for p in positions)
        changed = [i for i, (a, b) in enumerate(zip(s.prompt, s.text)) if a != b]
        assert changed == positions and len(s.text) == 12
    again = policy.logprobs(samples)
    for s, lp in zip(samples, again):
        np.testing.assert_allclose(lp, s.logprobs, atol=1e-5)
        assert s.entropy is not None and np.all(np.isfinite(s.entropy)) and np.all(s.entropy >= 0)
    assert len({s.text for s in samples}) > 8, "an untrained flip policy spreads its choices"


def test_flip_mode_refuses_what_it_cannot_edit():
    with pytest.raises(ValueError, match="two-character alphabet"):
        EmbeddedConfig(alphabet="abc", length=5, write="flips")
    with pytest.raises(ValueError, match="max_flips"):
        EmbeddedConfig(alphabet="+-", length=5, write="flips", max_flips=6)
    with pytest.raises(ValueError, match="exactly 12 characters"):
        flip_policy().sample(["+-+"], 2, temperature=1.0, max_new_tokens=3)


def test_flip_mode_imitates_an_edit_and_learns_from_rewards():
    policy = flip_policy(seed=0, lr=3e-3)
    rng = np.random.default_rng(0)
    states = ["".join(rng.choice(["+", "-"], size=12)) for _ in range(64)]
    switch = {"+": "-", "-": "+"}
    pairs = [(s, s[:3] + switch[s[3]] + s[4:]) for s in states]  # always switch position 3
    policy.imitate(pairs, steps=60, batch_size=32)
    greedy = policy.sample([states[0]], 1, temperature=0.0, max_new_tokens=5)[0][0]
    assert greedy.completion_ids == [3, EOS]
    # from scratch, reward only answers that switch position 7: their share must rise
    policy = flip_policy(seed=0, lr=3e-3)

    def share(samples):
        return np.mean([7 in s.completion_ids for s in samples])

    before = share(flat(policy.sample(states[:8], 16, temperature=1.0, max_new_tokens=5)))
    for _ in range(15):
        samples = flat(policy.sample(states[:8], 16, temperature=1.0, max_new_tokens=5))
        rewards = np.array([float(7 in s.completion_ids) for s in samples])
        items = [TrainItem(s, float(r - rewards.mean())) for s, r in zip(samples, rewards)]
        policy.update(items, LossConfig(aggregation="seq-sum"))
    after = share(flat(policy.sample(states[:8], 16, temperature=1.0, max_new_tokens=5)))
    assert after > before + 0.3, (before, after)


def test_a_flip_checkpoint_loads_only_into_a_flip_policy(tmp_path):
    policy = flip_policy(seed=2)
    policy.save(tmp_path / "p")
    restored = EmbeddedPolicy.from_checkpoint(tmp_path / "p")
    samples = flat(policy.sample(["+-+-++--+++-"], 4, temperature=1.0, max_new_tokens=5))
    np.testing.assert_allclose(np.concatenate(restored.logprobs(samples)), np.concatenate(policy.logprobs(samples)),
                               atol=1e-6)
    text = EmbeddedPolicy(EmbeddedConfig(alphabet="+-", length=12, d_model=32, n_layer=1))
    with pytest.raises(ValueError, match="write"):
        text.load(tmp_path / "p")
