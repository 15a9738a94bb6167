"""Sampling through vLLM on a GPU, with the policy's latest LoRA adapter.

`HFPolicy(sampler="vllm")` trains with transformers + peft and samples here: after each update it
saves its adapter to a new directory, and the next call passes it as a `LoRARequest` with a new
integer id (vLLM caches adapters by id, so a new version must never reuse one); the policy
deletes directories the engine no longer needs and tells the engine to drop them.

Streaming. Requests go to the engine one by one (`llm_engine.add_request`) and the engine is
stepped until all are done; each completion is reported the moment it finishes, so the trainer
evaluates it while the rest of the batch is still decoding (the batch is still scheduled as one,
as `LLM.generate` would). A vLLM without that engine API falls back to one blocking `generate`.

Seeds. Each row (one sample of one prompt) is its own request with `n=1` and its own seed, so
identical prompts (a fixed initial state, repeated PUCT picks) draw different samples; vLLM's
prefix caching still shares the prompt's KV cache between them.

One GPU. The engine is built with `enable_sleep_mode`; `sleep()` (level 1: weights to CPU RAM,
KV cache dropped) runs before each update and `wake()` before the next sample, so the update
has the memory the KV cache held. Both are no-ops when already in that state or when
`settings.sleep` is off.

Log-prob convention. vLLM's default `logprobs_mode` is "raw_logprobs": log-probs of the model's
raw distribution, before temperature. Our policies train on the temperature-scaled
distribution, so from vLLM 0.10.2 on we ask for "processed_logprobs": the distribution actually
sampled from. vLLM 0.10.0 and 0.10.1 already accept `logprobs_mode`, but their "processed"
log-probs are taken before temperature is applied, so `processed_logprobs_supported` gates on the
version, not on the field. With an older vLLM the reported log-probs are the raw ones; use
`logprobs="recompute"` there.

LoRA rank. vLLM accepts only a few values of `max_lora_rank` (`VLLM_LORA_RANKS`) and refuses an
adapter whose rank exceeds it: `vllm_max_lora_rank` rounds the policy's rank up to the next
allowed value and refuses ranks above the largest.

Allocator. vLLM's sleep mode allocates through its own CUDA memory pool, which PyTorch's
`expandable_segments` allocator setting breaks (nothing is freed, or vLLM refuses to start).
`without_expandable_segments` drops that option from `PYTORCH_CUDA_ALLOC_CONF` (and its newer
name `PYTORCH_ALLOC_CONF`) before the engine starts, with a warning: the engine's process then
starts without it, while the trainer's process keeps what its allocator already read.

Sampling parameters are explicit and neutral (top-p 1, no top-k, no min-p, no penalties): vLLM
only applies a model's `generation_config.json` defaults when no `SamplingParams` is given.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttd_agent.policy.renderers import Completion
from ttd_agent.policy.settings import LLMSettings

log = logging.getLogger(__name__)

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for `max_lora_rank`."""
PROCESSED_LOGPROBS_SINCE = (0, 10, 2)
"""First vLLM whose "processed_logprobs" include temperature (0.10.0-0.10.1 accept the mode but
report log-probs before temperature)."""
ALLOC_CONF_VARIABLES = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds an adapter of `rank`."""
    if rank < 1:
        raise ValueError(f"the LoRA rank must be >= 1, got {rank}")
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above the largest vLLM serves ({VLLM_LORA_RANKS[-1]}); "
                     f"use --lora-rank <= {VLLM_LORA_RANKS[-1]} or --sampler hf")


def processed_logprobs_supported(version: str, fields: set[str]) -> bool:
    """Whether this vLLM (its `__version__` and EngineArgs field names) reports log-probs of the
    temperature-scaled distribution when asked for "processed_logprobs"."""
    from packaging.version import InvalidVersion, Version

    try:
        release = Version(version).release
    except InvalidVersion:
        return False
    return "logprobs_mode" in fields and tuple(release[:3]) >= PROCESSED_LOGPROBS_SINCE


def without_expandable_segments(value: str) -> str:
    """An allocator setting (`PYTORCH_CUDA_ALLOC_CONF`'s comma-separated options) without
    `expandable_segments`, which vLLM's sleep mode cannot work with."""
    options = [o.strip() for o in value.split(",") if o.strip()]
    return ",".join(o for o in options if o.split(":")[0].strip() != "expandable_segments")


def clear_expandable_segments(environ: Any) -> list[str]:
    """Drop `expandable_segments` from the allocator variables of `environ` (in place) before a
    sleep-mode engine starts in its own process; returns the variables changed. Refuses when the
    engine would run in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), whose allocator has
    already read the setting."""
    changed = []
    for name in ALLOC_CONF_VARIABLES:
        value = environ.get(name)
        if value is not None and "expandable_segments:true" in value.replace(" ", "").lower():
            cleaned = without_expandable_segments(value)
            if cleaned:
                environ[name] = cleaned
            else:
                del environ[name]
            changed.append(name)
    if changed and environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0":
        raise ValueError(f"{', '.join(changed)} sets expandable_segments:True, which breaks vLLM's sleep mode, and "
                         f"VLLM_ENABLE_V1_MULTIPROCESSING=0 runs the engine in this process, whose allocator has "
                         f"already read it: unset it, or pass --sleep false")
    return changed


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as error:
        raise ImportError("sampling with vLLM needs the `vllm` extra and a CUDA GPU: pip install 'ttd[vllm]' "
                          "(or use sampler='hf')") from error
    return vllm


def engine_args(model: str, settings: LLMSettings, *, max_lora_rank: int, seed: int,
                fields: set[str], version: str) -> dict[str, Any]:
    """`vllm.LLM` arguments from the settings; `fields` are the names this vLLM's EngineArgs
    knows, `version` its `__version__`; `max_lora_rank` is the policy's LoRA rank (rounded up)."""
    args: dict[str, Any] = {"model": model, "enable_lora": True, "max_lora_rank": vllm_max_lora_rank(max_lora_rank),
                            "seed": seed,
                            "gpu_memory_utilization": settings.gpu_memory_utilization,
                            "enforce_eager": settings.enforce_eager,
                            "tensor_parallel_size": settings.tensor_parallel_size,
                            "enable_prefix_caching": True}
    if settings.max_model_len is not None:
        args["max_model_len"] = settings.max_model_len
    if settings.dtype is not None:
        args["dtype"] = settings.dtype
    if settings.sleep:
        args["enable_sleep_mode"] = True
    if processed_logprobs_supported(version, fields):
        args["logprobs_mode"] = "processed_logprobs"
    return {k: v for k, v in args.items() if k in fields or k == "model"}


class VLLMSampler:
    """A `vllm.LLM` with LoRA enabled, as a token-level engine (`generate`) that can sleep."""

    def __init__(self, model: str, *, max_lora_rank: int, seed: int = 0, settings: LLMSettings | None = None,
                 **kwargs: Any):
        self.vllm = _import_vllm()
        self.model = str(model)
        self.settings = settings or LLMSettings()
        known = {f.name for f in dataclasses.fields(self.vllm.EngineArgs)}
        version = str(getattr(self.vllm, "__version__", "unknown"))
        args = {**engine_args(self.model, self.settings, max_lora_rank=max_lora_rank, seed=seed, fields=known,
                              version=version), **kwargs}
        if args.get("max_lora_rank") not in VLLM_LORA_RANKS or args["max_lora_rank"] < max_lora_rank:
            raise ValueError(f"max_lora_rank={args.get('max_lora_rank')!r} cannot serve a rank-{max_lora_rank} "
                             f"adapter; vLLM accepts {', '.join(map(str, VLLM_LORA_RANKS))}")
        self.processed = args.get("logprobs_mode") == "processed_logprobs"
        """True when vLLM reports the log-probs of the (temperature-scaled) distribution it sampled from."""
        if not self.processed:
            log.warning("vLLM %s does not report the sampled (tempered) distribution's log-probs; use "
                        "--logprobs recompute", version)
        self.sleeps = bool(args.get("enable_sleep_mode"))
        if self.sleeps:
            import os

            for name in clear_expandable_segments(os.environ):
                log.warning("%s had expandable_segments:True, which breaks vLLM's sleep mode: removed for the "
                            "engine (now %r)", name, os.environ.get(name, ""))
        self.asleep = False
        self.llm = self.vllm.LLM(**args)
        self._adapter_ids: dict[str, int] = {}
        self._next_id = 1  # ids start at 1 and are never reused
        self._batches = 0

    # ---- memory around updates

    def sleep(self) -> None:
        """Free the GPU for an update: weights to CPU RAM, KV cache dropped (level 1)."""
        if self.sleeps and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    # ---- adapters

    def _lora(self, adapter_dir: Path | None) -> Any:
        if adapter_dir is None:
            return None
        from vllm.lora.request import LoRARequest

        key = str(Path(adapter_dir).resolve())
        if key not in self._adapter_ids:
            self._adapter_ids[key] = self._next_id
            self._next_id += 1
        index = self._adapter_ids[key]
        return LoRARequest(f"policy-{index}", index, key)

    def forget_adapter(self, adapter_dir: Path) -> None:
        """The policy deletes `adapter_dir`: drop it from the engine's LoRA cache too."""
        index = self._adapter_ids.pop(str(Path(adapter_dir).resolve()), None)
        remove = getattr(self.llm, "remove_lora", None) or getattr(getattr(self.llm, "llm_engine", None),
                                                                    "remove_lora", None)
        if index is not None and remove is not None:
            remove(index)

    # ---- sampling

    def generate(self, rows: list[list[int]], temperature: float, max_new_tokens: int, seeds: list[int],
                 on_row: Callable[[int, Completion], None], *, adapter_dir: Path | None = None,
                 stop_ids: Sequence[int] = ()) -> None:
        """One completion per row of prompt ids, each with its own seed, reported through `on_row`
        as soon as it finishes."""
        self.wake()
        final_only = {}
        try:
            from vllm.sampling_params import RequestOutputKind

            final_only = {"output_kind": RequestOutputKind.FINAL_ONLY}
        except ImportError:
            pass
        params = [self.vllm.SamplingParams(n=1, temperature=temperature, top_p=1.0, top_k=-1, min_p=0.0,
                                           max_tokens=max_new_tokens, logprobs=0, seed=seed,
                                           stop_token_ids=list(stop_ids), **final_only) for seed in seeds]
        inputs = [{"prompt_token_ids": list(r)} for r in rows]
        lora = self._lora(adapter_dir)
        engine = getattr(self.llm, "llm_engine", None)
        if not all(hasattr(engine, name) for name in ("add_request", "step", "has_unfinished_requests")):
            outputs = self.llm.generate(inputs, params, lora_request=lora, use_tqdm=False)
            for k, out in enumerate(outputs):
                on_row(k, _completion(out))
            return
        prefix = f"ttd-{self._batches}-"
        self._batches += 1
        for k, (prompt, p) in enumerate(zip(inputs, params, strict=True)):
            engine.add_request(f"{prefix}{k}", prompt, p, lora_request=lora)
        while engine.has_unfinished_requests():
            for out in engine.step():
                if out.finished and out.request_id.startswith(prefix):
                    on_row(int(out.request_id[len(prefix):]), _completion(out))


def _completion(out: Any) -> Completion:
    """A vLLM RequestOutput (n=1) as a Completion with the sampled tokens' log-probs."""
    completion = out.outputs[0]
    ids = list(completion.token_ids)
    steps = completion.logprobs or []
    logp = np.array([steps[t][tok].logprob for t, tok in enumerate(ids)] if steps else [0.0] * len(ids),
                    dtype=np.float32)
    return Completion(ids=ids, logprobs=logp, finished=completion.finish_reason != "length")
