"""The vLLM path on a CPU, against a fake of the *engine* (the `vllm` package): the policy, the
sampler, the adapter hand-over and the sleep/wake around updates are the real code.

The fake `vllm.LLM` records every call in one log and samples tokens from a generator seeded by
each request's seed, so identical seeds would give identical samples and distinct ones differ.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from toy_problems import distinct_characters

from ttd_agent.policy.base import LossConfig, TrainItem
from ttd_agent.policy.hf import HFPolicy
from ttd_agent.policy.tiny import build_tiny_causal_lm
from ttd_agent.trainer import DiscoveryConfig, DiscoveryTrainer


@dataclasses.dataclass
class EngineArgs:  # the field names vLLM's EngineArgs has (those the sampler may set)
    model: str = ""
    enable_lora: bool = False
    max_lora_rank: int = 16
    seed: int = 0
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    dtype: str = "auto"
    enable_sleep_mode: bool = False
    enable_prefix_caching: bool = False
    logprobs_mode: str = "raw_logprobs"


class SamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class LoRARequest:
    def __init__(self, name, lora_id, path):
        self.lora_name, self.lora_int_id, self.lora_path = name, lora_id, path


class FakeEngine:
    """The engine API the sampler streams through: requests in, one finished request per step."""

    def __init__(self, log, vocab):
        self.log, self.vocab, self.pending, self.batch_open = log, vocab, [], False

    def add_request(self, request_id, prompt, params, lora_request=None):
        self.pending.append((request_id, prompt, params, lora_request))

    def has_unfinished_requests(self):
        return bool(self.pending)

    def step(self):
        if not self.batch_open:  # one "generate" entry per batch of requests, as LLM.generate would be
            lora = self.pending[0][3]
            self.log.append(("generate", lora and (lora.lora_int_id, lora.lora_path), [r[2].seed for r in self.pending]))
            assert Path(lora.lora_path).is_dir() if lora else True, "adapter deleted before use"
            self.batch_open = True
        request_id, prompt, p, _ = self.pending.pop(0)
        self.batch_open = bool(self.pending)
        self.log.append(("step", request_id))
        rng = np.random.default_rng(p.seed)
        ids = rng.integers(10, self.vocab, size=p.max_tokens).tolist()
        logprobs = [{t: types.SimpleNamespace(logprob=float(-rng.random() * 5))} for t in ids]
        completion = types.SimpleNamespace(token_ids=ids, logprobs=logprobs, finish_reason="length", text="")
        return [types.SimpleNamespace(request_id=request_id, finished=True, outputs=[completion],
                                      prompt_token_ids=prompt["prompt_token_ids"])]


class FakeLLM:
    """Speaks the slice of `vllm.LLM` the sampler uses; tokens come from each request's seed."""

    log: list = []
    vocab = 300

    def __init__(self, **args):
        self.args = args
        FakeLLM.log.append(("init", args))
        self.llm_engine = FakeEngine(FakeLLM.log, self.vocab)

    def sleep(self, level):
        FakeLLM.log.append(("sleep", level))

    def wake_up(self):
        FakeLLM.log.append(("wake",))

    def remove_lora(self, lora_id):
        FakeLLM.log.append(("remove_lora", lora_id))


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams, vllm.EngineArgs = FakeLLM, SamplingParams, EngineArgs
    vllm.__version__ = "0.11.0"
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    for name, module in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, module)
    FakeLLM.log = []
    return FakeLLM.log


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return str(build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm")))


def events(log, *names):
    return [entry for entry in log if entry[0] in names]


def test_engine_settings_reach_the_engine(fake_vllm, tiny_lm):
    HFPolicy(tiny_lm, lora_rank=4, sampler="vllm", device="cpu", gpu_memory_utilization=0.3,
             max_model_len=4096, enforce_eager=True, tensor_parallel_size=2, dtype="float32")
    args = fake_vllm[0][1]
    assert args["gpu_memory_utilization"] == 0.3 and args["max_model_len"] == 4096 and args["enforce_eager"]
    assert args["tensor_parallel_size"] == 2 and args["dtype"] == "float32" and args["max_lora_rank"] == 8  # rank 4 rounded up
    assert args["enable_sleep_mode"] and args["enable_lora"] and args["logprobs_mode"] == "processed_logprobs"


def test_engine_sleeps_through_each_update_and_samples_with_the_newest_adapter(fake_vllm, tiny_lm):
    policy = HFPolicy(tiny_lm, lora_rank=4, lr=1e-2, sampler="vllm", device="cpu", dtype="float32")
    backward = next(p for n, p in policy.model.named_parameters() if "lora_B" in n)
    backward.register_hook(lambda grad: fake_vllm.append(("backward",)))
    seen_dirs = []
    for step in range(3):
        groups = policy.sample(["same prompt", "same prompt"], 2, temperature=1.0, max_new_tokens=6)
        samples = [s for g in groups for s in g]
        assert all(len(s.completion_ids) == 6 and not s.finished for s in samples)
        policy.update([TrainItem(s, 1.0 if i % 2 else -1.0) for i, s in enumerate(samples)], LossConfig())
        seen_dirs.append(events(fake_vllm, "generate")[-1][1])
    order = [e[0] for e in events(fake_vllm, "generate", "sleep", "wake", "backward")]
    # sample, then sleep before the first backward, wake before the next sample
    assert order[:2] == ["generate", "sleep"] and order[2] == "backward"
    per_step = [part for part in "|".join(order).split("generate") if part]
    assert all(part.strip("|").startswith("sleep") for part in per_step)
    assert order.count("sleep") == 3 and order.count("wake") == 2  # the last update leaves it asleep
    assert order.index("wake") < order.index("generate", 1)
    # before any update the base model; then adapter v1, v2 under new ids
    assert seen_dirs[0] is None and seen_dirs[1][0] == 1 and seen_dirs[2][0] == 2
    assert seen_dirs[1][1].endswith("v000001") and seen_dirs[2][1].endswith("v000002")


def test_old_adapters_are_deleted_and_dropped_from_the_engine(fake_vllm, tiny_lm):
    policy = HFPolicy(tiny_lm, lora_rank=4, lr=1e-2, sampler="vllm", device="cpu", dtype="float32")
    for _ in range(3):
        samples = [s for g in policy.sample(["p"], 2, temperature=1.0, max_new_tokens=4) for s in g]
        policy.update([TrainItem(s, float(i) - 0.5) for i, s in enumerate(samples)], LossConfig())
    policy.sample(["p"], 1, temperature=1.0, max_new_tokens=4)
    kept = sorted(p.name for p in Path(policy._adapters.name).iterdir())
    assert kept == ["v000003"]  # keep_adapters=1: only what the sampler still needs
    assert [e[1] for e in events(fake_vllm, "remove_lora")] == [1, 2]


def test_every_row_has_its_own_seed_so_identical_prompts_differ(fake_vllm, tiny_lm):
    policy = HFPolicy(tiny_lm, lora_rank=4, sampler="vllm", device="cpu", dtype="float32", seed=7)
    first = policy.sample(["fixed state"] * 3, 4, temperature=1.0, max_new_tokens=8)
    second = policy.sample(["fixed state"] * 3, 4, temperature=1.0, max_new_tokens=8)
    seeds = [s for e in events(fake_vllm, "generate") for s in e[2]]
    assert len(seeds) == 24 and len(set(seeds)) == 24
    texts = [tuple(s.completion_ids) for g in first + second for s in g]
    assert len(set(texts)) == 24
    again = HFPolicy(tiny_lm, lora_rank=4, sampler="vllm", device="cpu", dtype="float32", seed=7)
    assert [s.completion_ids for g in again.sample(["fixed state"] * 3, 4, temperature=1.0, max_new_tokens=8)
            for s in g] == [s.completion_ids for g in first for s in g]  # same seed, same run


def test_each_completion_is_reported_as_soon_as_the_engine_finishes_it(fake_vllm, tiny_lm):
    policy = HFPolicy(tiny_lm, lora_rank=4, sampler="vllm", device="cpu", dtype="float32")
    groups = policy.sample(["a", "b"], 2, temperature=1.0, max_new_tokens=4,
                           on_sample=lambda i, j, sample: fake_vllm.append(("on_sample", i, j)))
    order = [e for e in fake_vllm if e[0] in ("step", "on_sample")]
    assert [e[0] for e in order] == ["step", "on_sample"] * 4  # evaluation can start after the first step
    assert [e[1:] for e in order if e[0] == "on_sample"] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [len(g) for g in groups] == [2, 2]


def test_importance_ratio_uses_the_samplers_logprobs_unless_recompute(fake_vllm, tiny_lm):
    policy = HFPolicy(tiny_lm, lora_rank=4, sampler="vllm", device="cpu", dtype="float32")
    samples = [s for g in policy.sample(["p"], 3, temperature=1.0, max_new_tokens=5) for s in g]
    own = policy.logprobs(samples)
    assert max(np.abs(a - s.logprobs).max() for a, s in zip(own, samples)) > 0.1  # the fake's, not ours
    assert abs(policy.update([TrainItem(s, 1.0) for s in samples], LossConfig())["ratio_mean"] - 1) > 0.01
    policy.settings.logprobs = "recompute"
    samples = [s for g in policy.sample(["p"], 3, temperature=1.0, max_new_tokens=5) for s in g]
    stats = policy.update([TrainItem(s, 1.0) for s in samples], LossConfig())
    assert abs(stats["ratio_max"] - 1) < 1e-4


Distinct = distinct_characters(group_size=3, steps=2, max_new_tokens=5)


def test_a_discovery_run_through_the_vllm_path(fake_vllm, tiny_lm, tmp_path):
    """Two trainer steps: each samples (streamed into the evaluator), sleeps the engine for the
    update, and wakes it for the next step's samples with the new adapter."""
    DiscoveryTrainer(DiscoveryConfig(env=f"{__name__}:Distinct", model=tiny_lm, sampler="vllm", device="cpu",
                                     lora_rank=4, llm={"dtype": "float32"}, run_dir=str(tmp_path / "run"))).run()
    order = [e[0] for e in events(fake_vllm, "generate", "sleep", "wake")]
    assert order == ["generate", "sleep", "wake", "generate", "sleep"]
    assert events(fake_vllm, "generate")[1][1][0] == 1  # step 2 samples with adapter v1
    assert len((tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()) == 12
