"""TTT-Discover: test-time RL on one problem, read top to bottom.

Each step:
  1. pick `groups_per_step` start states from the buffer (PUCT, greedy, or fixed = no reuse);
  2. sample a group of `group_size` answers per start state from the current policy;
  3. evaluate all answers in parallel, each under the problem's sandbox;
  4. turn each group's rewards into advantages (adaptive entropic by default);
  5. one policy-gradient step on the groups whose rewards differ;
  6. add the new valid states to the buffer and back up the PUCT statistics;
  7. checkpoint policy + buffer + trainer state atomically, then log the step.
The output of a run is the best state found (best.json), not the trained policy.
"""

from __future__ import annotations

import concurrent.futures as cf
import inspect
import json
import logging
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ttd_agent.executor import Executor
from ttd_agent.objective import group_advantages, is_informative
from ttd_agent.plots import plot_best_so_far, plot_reward_distribution
from ttd_agent.policy.base import LossConfig, Policy, Sample, TrainItem, request_metrics
from ttd_agent.puct import StateBuffer, dedup_keys, same_solution
from ttd_agent.rundir import RunDir, read_json, write_json_atomic
from ttd_agent.sinks import check_sinks, make_sinks
from ttd_agent.runconfig import reconcile_resume
from ttd_envs.core.problem import EmbeddedSpec, Evaluation, record_reward
from ttd_envs.core.state import State
from ttd_envs.registration import make_problem

log = logging.getLogger(__name__)

Objective = Literal["entropic-adaptive", "entropic", "mean", "grpo"]
Reuse = Literal["puct", "greedy", "none"]


@dataclass
class DiscoveryConfig:
    """Everything a run needs; `None` fields take the env's defaults (`Problem.defaults`).

    Paper scale (agent.md §1): groups_per_step=64, group_size=8, steps=50, lr=4e-5, LoRA rank 32,
    temperature 1.0. The defaults here come from each env, sized for the machine it usually runs on.
    """

    env: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    """A causal LM path or hub id for the HF backend, "embedded" for the built-in tiny policy, or
    None for the env's default kind (envs whose answers are programs need a real LLM)."""
    steps: int | None = None
    groups_per_step: int | None = None
    group_size: int | None = None
    lr: float | None = None
    temperature: float | None = None
    max_new_tokens: int | None = None
    objective: Objective = "entropic-adaptive"
    beta: float = 2.0
    """β of the fixed-β entropic objective (the reference code's value)."""
    reuse: Reuse = "puct"
    puct_c: float = 1.0
    epsilon: float = 0.1
    """Exploration rate of the greedy reuse sampler."""
    buffer_capacity: int = 1000
    children_per_parent: int = 2
    kl_coef: float = 0.0
    clip_eps: float | None = None
    update: bool = True
    """False samples without ever updating: best-of-N from the frozen policy, at the same budget."""
    lora_rank: int = 32
    lora_alpha: float | None = None
    lora_target_modules: list[str] | None = None
    full_finetune: bool = False
    """HF backend: train every weight instead of a LoRA adapter (small models only)."""
    device: str | None = None
    sampler: Literal["hf", "vllm", "openai"] = "hf"
    """Where an LLM samples: its own decoding loop ("hf"), vLLM on the same GPU ("vllm"), or an
    OpenAI-compatible server (`llm.base_url`; with `update=False` no local weights are needed)."""
    llm: dict[str, Any] = field(default_factory=dict)
    """LLM policy and engine settings that differ from `LLMSettings`' defaults (policy/settings.py)."""
    overlap: bool = True
    """Evaluate each answer as soon as it is sampled, while the rest are still sampling."""
    sinks: list[str] = field(default_factory=list)
    """Where each step's metrics also go, beside metrics.jsonl: "tensorboard", "wandb" (offline)."""
    embedded: dict[str, Any] = field(default_factory=dict)
    """Overrides of the embedded policy's config (d_model, n_layer, ...)."""
    edit_prior: bool = True
    """For envs whose answers edit the state shown (LABS): first teach the embedded policy to
    rewrite its prompt with a few random edits, the stand-in for what an LLM brings (knowing how to
    rewrite the program it is shown). Without it the tiny policy must discover copying from rewards."""
    edit_prior_edits: float = 2.0
    """Mean number of characters the prior changes per answer."""
    unchanged: Literal["zero", "drop", "keep"] | None = None
    """Default: "zero" for the embedded policy, "keep" for an LLM (see docs/llm.md: an LLM program
    that finds nothing better honestly returns the incumbent; scoring that like a crash would
    teach it never to return its best, and the reference keeps its real reward).
    What the update does with an answer that hands back its start state unchanged. It discovers
    nothing, yet near a good state it is often the best of its group, and rewarding it ("keep")
    teaches the policy to copy until every sample is the same and the search stops. "zero" trains
    on it as reward 0, pushing away from copying (now and then so hard that the policy forgets to
    copy for a step or two, which on LABS pays as exploration); "drop" leaves it out of its group's
    advantages. Logged rewards and the buffer are untouched."""
    known_is_unchanged: bool = False
    """Also treat as unchanged an answer that reproduces any state already in the buffer. A policy
    that writes flips (embedded `write="flips"`) otherwise learns to undo the flip that made its
    start worse than its parent: the parent comes back, the group's best, and nothing is found."""
    eval_workers: int = 2
    executor: Literal["thread", "process", "ray"] = "thread"
    eval_timeout_s: float | None = None
    seed: int = 0
    run_dir: str = "runs/latest"
    checkpoint_every: int = 1
    plot_every: int = 5


@dataclass
class StepResult:
    """What one step did; also the row written to metrics.jsonl."""

    row: dict[str, Any]
    improved: bool


def resolve(config: DiscoveryConfig, problem: Any) -> DiscoveryConfig:
    """Fill every None with the env's default, and reject combinations that cannot work."""
    d = problem.defaults
    resolved = DiscoveryConfig(**asdict(config))
    for name, default in (("steps", d.steps), ("groups_per_step", d.groups_per_step), ("group_size", d.group_size),
                          ("temperature", d.temperature), ("max_new_tokens", d.max_new_tokens),
                          ("eval_timeout_s", d.eval_timeout_s + 30.0)):
        if getattr(resolved, name) is None:
            setattr(resolved, name, default)
    if resolved.model is None:
        if d.model_kind != "embedded":
            raise ValueError(
                f"{config.env} asks for programs, which only a real code LLM can write: pass --model with a local "
                f"path or hub id of a causal LM (e.g. Qwen/Qwen2.5-Coder-1.5B-Instruct; a GPU and the [agent] extra, "
                f"or [vllm] for fast sampling). The built-in embedded policy only attempts envs like ttd/LABS-v0.")
        resolved.model = "embedded"
    if resolved.model == "embedded" and d.embedded is None:
        raise ValueError(f"{config.env} has no embedded spec (its answers are programs); pass --model with a causal LM")
    if resolved.lr is None:
        resolved.lr = 1e-3 if resolved.model == "embedded" else 4e-5
    if resolved.unchanged is None:
        resolved.unchanged = "zero" if resolved.model == "embedded" else "keep"
    for name in ("steps", "groups_per_step", "group_size", "eval_workers", "checkpoint_every"):
        if getattr(resolved, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(resolved, name)}")
    if resolved.group_size < 2 and resolved.update:
        raise ValueError(f"--group-size must be >= 2, got {resolved.group_size}: advantages compare the rewards "
                         f"of a group, so a group of one learns nothing (--no-update samples without learning)")
    if resolved.temperature <= 0:
        raise ValueError(f"--temperature must be > 0, got {resolved.temperature}")
    return resolved


def build_policy(config: DiscoveryConfig, problem: Any, teach_prior: bool = True) -> Policy:
    """The embedded tiny transformer for "embedded", else a HF causal LM with LoRA. `teach_prior`
    False skips the edit prior (a checkpoint is about to replace the weights anyway)."""
    from ttd_agent.policy import make_policy

    if config.model == "embedded":
        spec = problem.defaults.embedded
        policy = make_policy("embedded", alphabet=spec.alphabet, length=spec.length,
                             edit_channel=spec.answer_edits_prompt, lr=config.lr, seed=config.seed, **config.embedded)
        if spec.answer_edits_prompt and config.edit_prior and teach_prior:
            teach_edit_prior(policy, spec, config.edit_prior_edits, np.random.default_rng([config.seed, 1]))
        return policy
    from ttd_agent.policy.settings import LLMSettings

    settings = LLMSettings.from_dict(config.llm)
    if config.sampler == "openai" and not config.update:
        from ttd_agent.policy.openai_sampler import OpenAIPolicy

        return OpenAIPolicy(config.model, settings=settings, seed=config.seed)
    if config.sampler != "openai":
        from ttd_agent.policy import check_hub_model

        check_hub_model(config.model)  # before the pre-flight reads its config.json from the hub
    if settings.preflight and config.sampler != "openai":
        from ttd_agent.policy.memory import preflight

        preflight(config.model, settings, sampler=config.sampler, lora_rank=config.lora_rank,
                  full_finetune=config.full_finetune, max_new_tokens=config.max_new_tokens,
                  sequences=config.groups_per_step * config.group_size, device=config.device)
    from ttd_agent.policy.tiny import TINY, answer_to_teach

    tiny = {"answer": answer_to_teach(problem)} if config.model == TINY else {}  # its answer format
    return make_policy("hf", model=config.model, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha,
                       target_modules=config.lora_target_modules, full_finetune=config.full_finetune,
                       lr=config.lr, device=config.device,
                       seed=config.seed, sampler=config.sampler, settings=settings, **tiny)


def teach_edit_prior(policy: Any, spec: EmbeddedSpec, edits: float, rng: np.random.Generator,
                     steps: int = 40, batch_size: int = 64) -> float:
    """Imitation on (random state, the state with ~`edits` random characters changed) pairs.

    The result samples near-copies of whatever state it is shown, so buffer reuse becomes a search
    around good states; which edits pay off is left to RL. Takes a few seconds; returns the loss.
    """
    assert spec.length is not None, "an edit prior needs answers of a fixed length"
    alphabet = np.array(list(spec.alphabet))
    k, n = len(alphabet), spec.length
    states = rng.integers(0, k, size=(steps * batch_size, n))
    changed = rng.random(states.shape) < edits / n
    shifts = rng.integers(1, k, size=states.shape) if k > 1 else np.zeros_like(states)
    answers = np.where(changed, (states + shifts) % k, states)
    pairs = [("".join(alphabet[s]), "".join(alphabet[a])) for s, a in zip(states, answers)]
    return policy.imitate(pairs, steps=steps, batch_size=batch_size)


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the sandboxed programs) so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def visible_gpus(device: str | None) -> int:
    """GPUs this process trains on (0 on a CPU run): the run viewer turns phase times into GPU-seconds."""
    torch = sys.modules.get("torch")  # loaded by any policy that can use a GPU; never imported here
    if torch is None or (device is not None and not device.startswith("cuda")) or not torch.cuda.is_available():
        return 0
    return 1 if device is not None and ":" in device else int(torch.cuda.device_count())


def training_rewards(rewards: np.ndarray, unchanged: np.ndarray,
                     mode: Literal["zero", "drop", "keep"]) -> tuple[np.ndarray, np.ndarray]:
    """(rewards the advantages see, mask of the samples trained on); see `DiscoveryConfig.unchanged`."""
    if mode not in ("zero", "drop", "keep"):
        raise ValueError(f"unchanged must be 'zero', 'drop' or 'keep', got {mode!r}")
    seen = np.where(unchanged, 0.0, rewards) if mode == "zero" else rewards
    trained = ~unchanged if mode == "drop" else np.ones_like(unchanged, dtype=bool)
    return seen, trained


class DiscoveryTrainer:
    """Owns the problem, policy, buffer, executor and run directory of one TTT-Discover run."""

    def __init__(self, config: DiscoveryConfig, *, resume: bool = False, policy: Policy | None = None,
                 changes: dict[str, Any] | None = None) -> None:
        """On `resume`, the saved config is used with `changes` (fields the caller asked for; by
        default `config.steps` when set) applied or refused by `runconfig.reconcile_resume`."""
        self.run_dir = RunDir(config.run_dir)
        if resume:
            if changes is None:
                changes = {"steps": config.steps} if config.steps is not None else {}
            saved = self.run_dir.config()
            if "llm" in changes:  # LLM settings are applied or refused one by one (settings.RESUMABLE)
                from ttd_agent.policy.settings import resume_llm

                changes = dict(changes)
                saved["llm"] = resume_llm(saved.get("llm", {}), changes.pop("llm"))
            config = DiscoveryConfig(**reconcile_resume(saved, changes)[0])
        self.problem = make_problem(config.env, **config.env_kwargs)
        try:
            self.config = resolve(config, self.problem)
            if not resume:  # after the arguments are checked (a bad one is the error to show), before the policy
                self.run_dir.refuse_existing()
        except BaseException:
            self._close_problem()
            raise
        resuming = resume and self.run_dir.latest_checkpoint() is not None
        check_sinks(self.config.sinks)  # before anything is loaded or written
        self.policy = policy if policy is not None else build_policy(self.config, self.problem,
                                                                    teach_prior=not resuming)
        self.compact = self.config.model == "embedded"
        self.executor = Executor(self.problem, self.config.eval_workers, self.config.eval_timeout_s,
                                 self.config.executor)
        self.rng = np.random.default_rng(self.config.seed)
        self._gpus = visible_gpus(self.config.device)
        self.step = 0
        self.samples = 0
        self.best: State | None = None
        self.best_curve: list[tuple[int, float]] = []
        if resume and self._restore():
            log.info("resumed %s at step %d", self.run_dir.path, self.step)
        else:
            self.run_dir.create(asdict(self.config), restart=resume)
            self.buffer = self._initial_buffer()
            self.run_dir.log_states(self.buffer.states())
            self.best = self.buffer.best()
            if self.best.reward is not None:
                self.best_curve.append((0, float(self.best.reward)))
        self.sinks = make_sinks(self.config.sinks, self.run_dir.path, asdict(self.config))

    # -- set-up and resume ---------------------------------------------------------------------
    def _initial_buffer(self) -> StateBuffer:
        """One initial state per group of a step: separate roots, so lineage blocking can still fill a
        diverse batch when one family's root scores highest (random starts differ; fixed ones repeat)."""
        initial = [self.problem.initial_state(self.rng).with_updates(is_initial=True)
                   for _ in range(self.config.groups_per_step)]
        sampler = {"puct": "puct", "greedy": "greedy", "none": "fixed"}[self.config.reuse]
        return StateBuffer(initial, capacity=self.config.buffer_capacity,
                           children_per_parent=self.config.children_per_parent, c=self.config.puct_c,
                           sampler=sampler, epsilon=self.config.epsilon)

    def _restore(self) -> bool:
        """Load the newest intact checkpoint (an older one, with a warning, if the latest is damaged)."""
        step = self.run_dir.restore(self._load_checkpoint)
        if step is None:
            return False
        self.run_dir.truncate_logs(step)
        return True

    def _load_checkpoint(self, step: int, path: Path) -> None:
        self.policy.load(path / "policy")
        self.buffer = StateBuffer.load(path / "buffer.json")
        state = json.loads((path / "trainer.json").read_text())
        self.step, self.samples = state["step"], state["samples"]
        self.rng.bit_generator.state = state["rng"]
        self.best = State.from_dict(state["best"]) if state["best"] else None
        self.best_curve = [tuple(point) for point in state["best_curve"]]

    def _checkpoint(self) -> None:
        def write(directory: Path) -> None:
            self.policy.save(directory / "policy")
            self.buffer.save(directory / "buffer.json")
            write_json_atomic(directory / "trainer.json", {
                "step": self.step, "samples": self.samples, "rng": self.rng.bit_generator.state,
                "best": self.best.to_dict() if self.best else None, "best_curve": self.best_curve,
            })

        self.run_dir.save_checkpoint(self.step, write)

    # -- one step ------------------------------------------------------------------------------
    def prompt_for(self, state: State) -> str:
        return self.problem.compact_prompt(state) if self.compact else self.problem.prompt(state)

    def train_step(self) -> StepResult:
        cfg = self.config
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        starts = self.buffer.select(cfg.groups_per_step, self.rng)
        groups, evaluations = self._sample_and_evaluate(starts)
        t_sample, t_eval, cpu_eval = self._t_sampled, time.perf_counter(), cpu_seconds()
        jobs = [(sample.text, start) for start, group in zip(starts, groups) for sample in group]
        usage = request_metrics(self.policy, [sample for group in groups for sample in group])
        failed = np.array([[sample.error is not None for sample in group] for group in groups], dtype=bool)

        rewards = np.array([ev.reward for ev in evaluations], dtype=np.float64).reshape(len(starts), cfg.group_size)
        parents = [start for start in starts for _ in range(cfg.group_size)]
        children = [ev.child_of(parent, {"step": self.step + 1}) for parent, ev in zip(parents, evaluations)]
        known = ({key for state in self.buffer.states() for key in dedup_keys(state)}
                 if cfg.known_is_unchanged else set())
        unchanged = np.array([child is not None
                              and (same_solution(parent, child) or not known.isdisjoint(dedup_keys(child)))
                              for parent, child in zip(parents, children)]).reshape(rewards.shape)
        seen, trained = training_rewards(rewards, unchanged, cfg.unchanged)
        items, group_betas, advantages = self._advantages(groups, seen, trained & ~failed)  # no completion, nothing to learn
        update_stats = self.policy.update(items, self._loss_config()) if cfg.update and items else {}
        t_update, cpu_update = time.perf_counter(), cpu_seconds()

        improved, inserted = self._grow_buffer(starts, children)
        self.step += 1
        self.samples += len(jobs)
        betas = [beta for beta in group_betas if beta is not None]
        informative = sum(1 for group in advantages if any(a is not None for a in group))
        row = self._metrics(rewards, evaluations, groups, betas, informative, update_stats,
                            timings=(t0, t_sample, t_eval, t_update))
        row["unchanged_fraction"] = float(unchanged.mean())
        row.update(usage)
        row.update(group_betas=group_betas, cpu_sample_eval_s=cpu_eval - cpu0, cpu_update_s=cpu_update - cpu_eval,
                   gpus=self._gpus)
        rollouts = self._rollout_rows(starts, groups, evaluations)
        for rollout, child, same, advantage in zip(rollouts, children, unchanged.ravel(),
                                                   [a for group in advantages for a in group]):
            rollout.update(child=child.id if child is not None else None, unchanged=bool(same), advantage=advantage)
        self.run_dir.log_step(row, rollouts)
        self.run_dir.log_states(inserted)
        for sink in self.sinks:
            sink.log(self.step, row)
        if improved:  # before the checkpoint: best.json is never staler than the last checkpoint
            self._write_best()
        if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
            self._checkpoint()
        return StepResult(row=row, improved=improved)

    def _sample_and_evaluate(self, starts: list[State]) -> tuple[list[list[Sample]], list[Evaluation]]:
        """Sample a group per start state and evaluate every answer. With `overlap` (and a policy
        whose `sample` reports samples as they finish) each evaluation starts the moment its
        answer exists, so evaluation hides behind sampling; still on-policy, as the update waits."""
        cfg = self.config
        prompts = [self.prompt_for(s) for s in starts]
        futures: dict[tuple[int, int], cf.Future[Evaluation]] = {}

        def submit(i: int, j: int, sample: Sample) -> None:
            futures[i, j] = self._evaluation(sample, starts[i])

        overlap = cfg.overlap and "on_sample" in inspect.signature(self.policy.sample).parameters
        groups = self.policy.sample(prompts, cfg.group_size, temperature=cfg.temperature,
                                    max_new_tokens=cfg.max_new_tokens, **({"on_sample": submit} if overlap else {}))
        self._t_sampled = time.perf_counter()
        if not overlap:
            for i, group in enumerate(groups):
                for j, sample in enumerate(group):
                    submit(i, j, sample)
        return groups, self.executor.gather([futures[i, j] for i, group in enumerate(groups) for j in range(len(group))])

    def _evaluation(self, sample: Sample, start: State) -> cf.Future[Evaluation]:
        """The evaluation of one answer, started now; a failed sample's is its failure, at once."""
        if sample.error is None:
            return self.executor.submit(sample.text, start)
        future: cf.Future[Evaluation] = cf.Future()
        future.set_result(Evaluation.failure(f"no answer: {sample.error}"))
        return future

    def _loss_config(self) -> LossConfig:
        """The reference's loss for an LLM: importance-weighted, sequence sums, KL centred."""
        return LossConfig(clip_eps=self.config.clip_eps, kl_coef=self.config.kl_coef, kl_mode="reward",
                          aggregation="seq-sum", kl_center=self.config.model != "embedded")

    def _advantages(self, groups: list[list[Sample]], rewards: np.ndarray, trained: np.ndarray
                    ) -> tuple[list[TrainItem], list[float | None], list[list[float | None]]]:
        """Per-group advantages over the `trained` samples of each group; a group whose trained
        rewards are all equal (or fewer than two) carries no signal and is dropped. Also returns
        each group's β (None: dropped, or an objective without one) and each sample's advantage
        (None: not trained on), which the rollout log keeps for the run viewer."""
        items: list[TrainItem] = []
        betas: list[float | None] = []
        per_sample: list[list[float | None]] = []
        for group, group_rewards, mask in zip(groups, rewards, trained):
            kept = [sample for sample, keep in zip(group, mask) if keep]
            betas.append(None)
            per_sample.append([None] * len(group))
            if len(kept) < 2 or not is_informative(group_rewards[mask]):
                continue
            advantages, betas[-1] = group_advantages(group_rewards[mask], self.config.objective, self.config.beta)
            for j, a in zip(np.flatnonzero(mask), advantages):
                per_sample[-1][j] = float(a)
            items.extend(TrainItem(sample, float(a)) for sample, a in zip(kept, advantages))
        return items, betas, per_sample

    def _grow_buffer(self, starts: list[State], children: list[State | None]) -> tuple[bool, list[State]]:
        """Record each group's children (None = failed rollout) under its start state; returns
        whether the best state improved, and the children the buffer took in."""
        size = self.config.group_size
        previous = self.best.reward if self.best is not None and self.best.reward is not None else -math.inf
        inserted: list[State] = []
        for g, parent in enumerate(starts):
            inserted += self.buffer.record_expansion(parent, children[g * size:(g + 1) * size])
        best = self.buffer.best()
        if best.reward is not None and best.reward > previous:
            self.best = best
            self.best_curve.append((self.samples + len(children), float(best.reward)))
            return True, inserted
        return False, inserted

    def _metrics(self, rewards: np.ndarray, evaluations: list[Evaluation], groups: list[list[Sample]],
                 betas: list[float], informative: int, update_stats: dict[str, float],
                 timings: tuple[float, float, float, float]) -> dict[str, Any]:
        t0, t_sample, t_eval, t_update = timings
        valid = np.array([ev.valid for ev in evaluations])
        tokens = [len(s.completion_ids) for group in groups for s in group]
        best_reward = self.best.reward if self.best is not None else None
        row: dict[str, Any] = {
            "step": self.step,
            "samples": self.samples,
            "reward_min": float(rewards.min()),
            "reward_mean": float(rewards.mean()),
            "reward_max": float(rewards.max()),
            "valid_fraction": float(valid.mean()),
            "best_reward": best_reward,
            "best_score": self.best.score if self.best is not None else None,
            "informative_groups": informative,
            "beta_mean": float(np.mean(betas)) if betas else None,
            "beta_min": float(np.min(betas)) if betas else None,
            "beta_max": float(np.max(betas)) if betas else None,
            "tokens": int(sum(tokens)),
            "completion_tokens_mean": float(np.mean(tokens)),
            "time_sample_s": t_sample - t0,
            "time_eval_s": t_eval - t_sample,
            "time_update_s": t_update - t_eval,
            "time_step_s": time.perf_counter() - t0,
        }
        row.update({f"buffer_{k}": v for k, v in self.buffer.stats().items()})
        row.update({f"update_{k}": v for k, v in update_stats.items()})
        return row

    def _rollout_rows(self, starts: list[State], groups: list[list[Sample]], evaluations: list[Evaluation]) -> list[dict[str, Any]]:
        rows = []
        samples = [(g, s) for g, group in enumerate(groups) for s in group]
        for (g, sample), ev in zip(samples, evaluations):
            rows.append({"step": self.step, "group": g, "parent": starts[g].id, "reward": ev.reward,
                         "score": ev.score, "valid": ev.valid, "tokens": len(sample.completion_ids),
                         "error": (ev.error or "")[:200] or None})
        return rows

    def _write_best(self) -> None:
        assert self.best is not None
        write_json_atomic(self.run_dir.best_file, {"env": self.config.env, "step": self.step,
                                                   "samples": self.samples, "state": self.best.to_dict()})
        if self.best.code:
            (self.run_dir.path / "best_code.txt").write_text(self.best.code)

    def _best_file_intact(self) -> bool:
        """best.json reads back (it may be newer than the checkpoint, so an intact one is kept)."""
        try:
            return isinstance(read_json(self.run_dir.best_file).get("state"), dict)
        except (OSError, ValueError, AttributeError):
            return False

    # -- the whole run ---------------------------------------------------------------------------
    def plot(self) -> None:
        rollouts = self.run_dir.read(self.run_dir.rollouts_file)
        if not rollouts:
            return
        plot_reward_distribution(rollouts, self.run_dir.plots / "reward_distribution.png",
                                 f"{self.config.env}: rewards per step")
        samples, best = zip(*self.best_curve) if self.best_curve else ((0,), (float("nan"),))
        curves = {"best so far": (list(samples) + [self.samples], list(best) + [best[-1]])}
        plot_best_so_far(curves | self.classic_curves(), self.run_dir.plots / "best_so_far.png",
                         f"{self.config.env}: best reward vs samples", target=record_reward(self.problem),
                         target_label="record (as a reward)")

    @property
    def initial_states(self) -> int:
        """States scored before the first step (one per group), so a run spends samples + these."""
        return self.config.groups_per_step

    def classic_curves(self) -> dict[str, tuple[list[int], list[float]]]:
        """The classic searches the summary compares against (LABS), at this run's evaluations so
        far, as rewards; x is their evaluations less the run's initial states, the run's samples."""
        from ttd_agent.classic_search import same_budget_searches

        curves = {}
        for name, result in same_budget_searches(self.problem, self.samples + self.initial_states,
                                                 self.config.seed).items():
            points = [(max(used - self.initial_states, 0), self.problem.reward_for(e)) for used, e in result.curve]
            curves[f"{name} (same evaluations)"] = ([x for x, _ in points] + [self.samples],
                                                    [y for _, y in points] + [points[-1][1]])
        return curves

    def run(self, on_step: Callable[[StepResult], None] | None = None) -> State:
        """Train until `steps`; returns the best state found. Safe to interrupt: --resume continues."""
        try:
            if self.best is not None and not self._best_file_intact():
                self._write_best()
            while self.step < self.config.steps:
                result = self.train_step()
                if on_step is not None:
                    on_step(result)
                if self.step % self.config.plot_every == 0:
                    self.plot()
            self.plot()
        finally:
            self.close()
        assert self.best is not None
        return self.best

    def close(self) -> None:
        self.executor.close()
        for sink in self.sinks:
            sink.close()
        self.sinks = []
        self._close_problem()

    def _close_problem(self) -> None:
        close = getattr(self.problem, "close", None)
        if callable(close):
            close()
