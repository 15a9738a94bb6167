"""Sampling through vLLM on a GPU, with the policy's latest LoRA adapter.

`HFPolicy(sampler="vllm")` trains with transformers + peft and samples here: after each update it
saves its adapter to a new directory, and the next `sample` passes it as a `LoRARequest` with a new
integer id (vLLM caches adapters by id, so a new version must never reuse one).

Log-prob convention. vLLM's default `logprobs_mode` is "raw_logprobs": log-probs of the model's
raw distribution, before temperature (and penalties, top-k/top-p). Our policies train on the
temperature-scaled distribution, so where vLLM has `logprobs_mode` (v0.10.2 and later) we ask for
"processed_logprobs": the distribution actually sampled from. With an older vLLM the reported
log-probs are the raw ones and `processed` is False; `HFPolicy` recomputes them with its own
forward by default either way (`vllm_logprobs="recompute"`), which also removes the small
numerical mismatch between vLLM's kernels and the trainer's.

Sampling parameters are explicit and neutral (top-p 1, no top-k, no min-p, no penalties): vLLM
only applies a model's `generation_config.json` defaults when no `SamplingParams` is given.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttd_agent.policy.base import Sample

log = logging.getLogger(__name__)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as error:
        raise ImportError("sampling with vLLM needs the `vllm` extra and a CUDA GPU: pip install 'ttd[vllm]' "
                          "(or use sampler='hf')") from error
    return vllm


class VLLMSampler:
    """A `vllm.LLM` with LoRA enabled; `sample` returns `Sample`s with per-token sampled log-probs."""

    def __init__(self, model: str, *, max_lora_rank: int, gpu_memory_utilization: float = 0.5, seed: int = 0,
                 **kwargs: Any):
        vllm = _import_vllm()
        self.model = str(model)
        self.seed = seed
        self._calls = 0
        self._adapter_ids: dict[str, int] = {}
        fields = {f.name for f in dataclasses.fields(vllm.EngineArgs)}
        self.processed = "logprobs_mode" in fields
        """True when vLLM reports the log-probs of the (temperature-scaled) distribution it sampled from."""
        args: dict[str, Any] = {"model": self.model, "enable_lora": True, "max_lora_rank": max_lora_rank,
                                "gpu_memory_utilization": gpu_memory_utilization, "seed": seed}
        if self.processed:
            args["logprobs_mode"] = "processed_logprobs"
        args.update(kwargs)
        self.processed = args.get("logprobs_mode") == "processed_logprobs"
        if not self.processed:
            log.warning("this vLLM reports raw (un-tempered) log-probs; recompute them with the trainer's model")
        self.llm = vllm.LLM(**args)
        self.tokenizer = self.llm.get_tokenizer()

    def _lora(self, adapter_dir: Path | None) -> Any:
        if adapter_dir is None:
            return None
        from vllm.lora.request import LoRARequest

        key = str(Path(adapter_dir).resolve())
        if key not in self._adapter_ids:
            self._adapter_ids[key] = len(self._adapter_ids) + 1  # ids start at 1
        index = self._adapter_ids[key]
        return LoRARequest(f"policy-{index}", index, key)

    def sample(self, prompts: Sequence[str | Sequence[int]], n: int, *, temperature: float, max_new_tokens: int,
               adapter_dir: Path | None = None, prompt_texts: Sequence[str] | None = None) -> list[list[Sample]]:
        """`n` completions per prompt (text, or token ids as rendered by the caller) with the adapter in
        `adapter_dir` (None: the base model). `prompt_texts` labels the samples (default: the prompts)."""
        vllm = _import_vllm()
        params = vllm.SamplingParams(n=n, temperature=temperature, top_p=1.0, top_k=-1, min_p=0.0,
                                     max_tokens=max_new_tokens, logprobs=0, seed=self.seed + self._calls)
        self._calls += 1
        inputs = [{"prompt": p} if isinstance(p, str) else {"prompt_token_ids": list(p)} for p in prompts]
        outputs = self.llm.generate(inputs, params, lora_request=self._lora(adapter_dir), use_tqdm=False)
        groups = []
        for i, out in enumerate(outputs):
            label = prompt_texts[i] if prompt_texts is not None else (prompts[i] if isinstance(prompts[i], str) else "")
            group = []
            for completion in out.outputs:
                ids = list(completion.token_ids)
                steps = completion.logprobs or []
                logp = np.array([steps[t][tok].logprob for t, tok in enumerate(ids)] if steps else [0.0] * len(ids),
                                dtype=np.float32)
                group.append(Sample(prompt=label, text=completion.text, prompt_ids=list(out.prompt_token_ids),
                                    completion_ids=ids, logprobs=logp, entropy=None,
                                    finished=completion.finish_reason != "length"))
            groups.append(group)
        return groups
