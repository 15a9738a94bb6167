"""GPU memory pre-flight: refuse, before loading anything, a run that cannot fit, and say why.

The estimate adds up what each phase of a step keeps on the GPU, from the architecture config
(hidden size, layers, heads, vocabulary) and the LLM settings:

- weights: parameters × dtype bytes (the trainer's copy; vLLM holds a second one while awake);
- training state: LoRA parameters, their gradients and Adam's two moments, float32 (16 bytes
  per trainable parameter; full fine-tuning also keeps a frozen reference copy);
- activations of one micro-batch: per token and layer, the tensors the backward pass needs
  (about 6H + 2·q + 2·kv + 4·I values, I = the MLP width times active experts), or one hidden
  vector per layer with gradient checkpointing plus one layer's worth being recomputed;
- logits: one chunk of `logit_chunk_tokens` rows × vocabulary, float32, about three live copies
  (logits, probabilities, their gradient), plus the head's output in the weights' dtype;
- sampling: vLLM's reservation (`gpu_memory_utilization` × the GPU) while awake, which must
  itself hold its weights and the KV cache of one `max_model_len` sequence; the hf sampler keeps
  a KV cache for `sample_batch_size` sequences instead;
- 1.5 GiB for the CUDA context, allocator slack and kernels' workspaces.

It is an estimate (activations depend on the attention kernel and allocator fragmentation), meant
to catch configurations that are off by a large factor; `scripts/gpu_llm_check.py` prints it
beside the measured peak. `python -m ttd_agent.policy.memory` prints the table of docs/llm.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ttd_agent.policy.settings import LLMSettings

log = logging.getLogger(__name__)

GIB = 1024**3
OVERHEAD = 1.5 * GIB
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class Architecture:
    """The numbers of a decoder-only transformer that decide its memory."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool = False
    experts: int = 1
    experts_per_token: int = 1

    @classmethod
    def from_config(cls, config: Any, name: str = "") -> Architecture:
        """From a transformers config (or its dict)."""
        get = (lambda k, d=None: config.get(k, d)) if isinstance(config, dict) else \
            (lambda k, d=None: getattr(config, k, d))
        heads = get("num_attention_heads")
        hidden = get("hidden_size")
        return cls(name=name or get("_name_or_path", "") or get("model_type", "model"), hidden=hidden,
                   layers=get("num_hidden_layers"), heads=heads, kv_heads=get("num_key_value_heads") or heads,
                   head_dim=get("head_dim") or hidden // heads, intermediate=get("intermediate_size"),
                   vocab=get("vocab_size"), tied=bool(get("tie_word_embeddings", False)),
                   experts=get("num_local_experts") or get("num_experts") or 1,
                   experts_per_token=get("num_experts_per_tok") or get("experts_per_token") or 1)

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def params(self) -> int:
        attention = self.hidden * self.q_width * 2 + self.hidden * self.kv_width * 2
        mlp = 3 * self.hidden * self.intermediate * self.experts + (self.hidden * self.experts if self.experts > 1 else 0)
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + self.layers * (attention + mlp + 2 * self.hidden) + self.hidden

    def lora_params(self, rank: int) -> int:
        """LoRA on every linear layer of attention and a dense MLP (peft's "all-linear"; fused
        expert weights of MoE models are not nn.Linear and take no adapter)."""
        attention = rank * ((self.hidden + self.q_width) * 2 + (self.hidden + self.kv_width) * 2)
        mlp = rank * 3 * (self.hidden + self.intermediate) if self.experts == 1 else 0
        return self.layers * (attention + mlp)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_width * dtype_bytes

    def activation_values_per_token(self, checkpointing: bool) -> int:
        """Values per token kept for the backward pass, all layers."""
        mlp = self.intermediate * self.experts_per_token
        per_layer = 6 * self.hidden + 2 * self.q_width + 2 * self.kv_width + 4 * mlp
        if checkpointing:
            return self.layers * self.hidden + per_layer
        return self.layers * per_layer


PRESETS = {
    "Qwen/Qwen2.5-1.5B-Instruct": Architecture("Qwen2.5-1.5B", 1536, 28, 12, 2, 128, 8960, 151936, tied=True),
    "Qwen/Qwen2.5-Coder-7B-Instruct": Architecture("Qwen2.5-7B", 3584, 28, 28, 4, 128, 18944, 152064),
    "Qwen/Qwen2.5-14B-Instruct": Architecture("Qwen2.5-14B", 5120, 48, 40, 8, 128, 13824, 152064),
    "Qwen/Qwen3-8B": Architecture("Qwen3-8B", 4096, 36, 32, 8, 128, 12288, 151936),
    "openai/gpt-oss-20b": Architecture("gpt-oss-20b", 2880, 24, 64, 8, 64, 2880, 201088, experts=32,
                                       experts_per_token=4),
}
"""Architecture values of a few models, written here so the docs' table and the GPU check need no download."""


@dataclass
class MemoryPlan:
    """Bytes per item of each phase, the GPU's size, and whether the larger phase fits."""

    architecture: Architecture
    gpu_bytes: float
    update: dict[str, float] = field(default_factory=dict)
    sampling: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def peak(self) -> float:
        return max(sum(self.update.values()), sum(self.sampling.values()))

    @property
    def fits(self) -> bool:
        return not self.problems and self.peak <= self.gpu_bytes

    def explain(self) -> str:
        def phase(name: str, items: dict[str, float]) -> str:
            terms = " + ".join(f"{label} {value / GIB:.1f}" for label, value in items.items())
            return f"{name}: {terms} = {sum(items.values()) / GIB:.1f} GiB"

        lines = [f"{self.architecture.name} ({self.architecture.params() / 1e9:.2f}B parameters) on a "
                 f"{self.gpu_bytes / GIB:.0f} GiB GPU", phase("update", self.update), phase("sampling", self.sampling)]
        return "\n".join(lines + self.problems)


def estimate(arch: Architecture, settings: LLMSettings, *, sampler: str, lora_rank: int, full_finetune: bool,
             max_new_tokens: int, gpu_bytes: float, prompt_tokens: int = 2048) -> MemoryPlan:
    """The memory of each phase of a step (see the module docstring)."""
    dtype = settings.dtype or "bfloat16"
    width = DTYPE_BYTES.get(dtype, 2)
    params = arch.params()
    sequence = settings.max_model_len or (prompt_tokens + max_new_tokens)
    plan = MemoryPlan(arch, gpu_bytes)
    weights = float(params * width)
    if full_finetune:
        training = float(params * (width + 8)) + weights  # gradients, Adam moments, frozen reference
    else:
        training = float(arch.lora_params(lora_rank) * 16)
    tokens = max(sequence, min(settings.micro_batch_tokens, settings.micro_batch_size * sequence))
    activations = float(tokens * arch.activation_values_per_token(settings.gradient_checkpointing) * width)
    chunk = min(settings.logit_chunk_tokens, tokens)
    logits = float(chunk * arch.vocab * (3 * 4 + width))
    engine = settings.gpu_memory_utilization * gpu_bytes if sampler == "vllm" else 0.0
    plan.update = {"weights": weights, "LoRA+Adam" if not full_finetune else "grads+Adam+reference": training,
                   f"activations ({tokens} tokens)": activations, "logit chunk": logits, "overhead": OVERHEAD}
    if sampler == "vllm":
        if settings.sleep:
            plan.update["vLLM asleep"] = 0.5 * GIB
        else:
            plan.update["vLLM reservation"] = engine
        plan.sampling = {"weights": weights, "LoRA+Adam": training, "vLLM reservation": engine, "overhead": OVERHEAD}
        kv_one = arch.kv_bytes_per_token(width) * sequence
        if engine < weights + kv_one:
            plan.problems.append(
                f"vLLM's share ({settings.gpu_memory_utilization:g} × {gpu_bytes / GIB:.0f} GiB = {engine / GIB:.1f} GiB) "
                f"cannot hold its weights ({weights / GIB:.1f} GiB) and the KV cache of one {sequence}-token "
                f"sequence ({kv_one / GIB:.1f} GiB): raise --gpu-memory-utilization or lower --max-model-len")
    else:
        rows = settings.sample_batch_size
        plan.sampling = {"weights": weights, "LoRA+Adam": training,
                         f"KV cache ({rows} × {sequence} tokens)": float(arch.kv_bytes_per_token(width) * sequence * rows),
                         "overhead": OVERHEAD}
    return plan


def architecture(model: str) -> Architecture:
    """From PRESETS, or the model's config.json (a local directory or the Hugging Face cache)."""
    if model in PRESETS:
        return PRESETS[model]
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    config = getattr(config, "text_config", None) or config
    return Architecture.from_config(config, name=model)


def preflight(model: str, settings: LLMSettings, *, sampler: str, lora_rank: int, full_finetune: bool,
              max_new_tokens: int, sequences: int, device: str | None) -> MemoryPlan | None:
    """Raise ValueError with the arithmetic when the run cannot fit on the GPU; None on a CPU run
    (nothing to check) unless `settings.gpu_memory_gib` asks to plan for a GPU anyway."""
    import torch

    if settings.gpu_memory_gib is not None:
        gpu_bytes = settings.gpu_memory_gib * GIB
    elif (device or "cuda").startswith("cuda") and torch.cuda.is_available():
        gpu_bytes = float(torch.cuda.get_device_properties(0).total_memory)
    else:
        return None
    try:
        arch = architecture(model)
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("memory pre-flight skipped: cannot read the architecture of %s (%s)", model, error)
        return None
    plan = estimate(arch, settings, sampler=sampler, lora_rank=lora_rank, full_finetune=full_finetune,
                    max_new_tokens=max_new_tokens, gpu_bytes=gpu_bytes)
    if not plan.fits:
        raise ValueError(
            "this configuration does not fit in GPU memory (estimate, GiB):\n" + plan.explain() +
            "\nTry --gradient-checkpointing true, a smaller --micro-batch-tokens or --logit-chunk-tokens, "
            "--sleep true with --sampler vllm, a smaller --max-new-tokens, or --preflight false to try anyway.")
    log.info("memory pre-flight:\n%s", plan.explain())
    return plan


def table(gpu_gib: float = 80.0, max_new_tokens: int = 16384) -> str:
    """The docs' table: peak estimate per preset, LoRA rank 32, vLLM asleep during updates."""
    lines = ["| model | params | weights | update peak (no ckpt) | update peak (ckpt) | sampling peak | fits |",
             "|---|---|---|---|---|---|---|"]
    for model, arch in PRESETS.items():
        plans = [estimate(arch, LLMSettings(gradient_checkpointing=ckpt), sampler="vllm", lora_rank=32,
                          full_finetune=False, max_new_tokens=max_new_tokens, gpu_bytes=gpu_gib * GIB)
                 for ckpt in (False, True)]
        lines.append(f"| {model} | {arch.params() / 1e9:.2f}B | {plans[0].update['weights'] / GIB:.1f} | "
                     f"{sum(plans[0].update.values()) / GIB:.1f} | {sum(plans[1].update.values()) / GIB:.1f} | "
                     f"{sum(plans[1].sampling.values()) / GIB:.1f} | {'yes' if plans[1].fits else 'no'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
