"""GPU memory pre-flight: refuse, before loading anything, a run that cannot fit, and say why.

The estimate adds up what each phase of a step keeps on the GPU, from the architecture config
(hidden size, layers, heads, vocabulary) and the LLM settings:

- weights: parameters × dtype bytes (the trainer's copy; vLLM holds a second one while awake);
- training state: LoRA parameters, their gradients and Adam's two moments, float32 (16 bytes
  per trainable parameter; full fine-tuning also keeps a frozen reference copy);
- activations of one micro-batch: per token and layer, the tensors the backward pass needs
  (about 6H + 2·q + 2·kv + 4·I values, I = the MLP width times active experts), or one hidden
  vector per layer with gradient checkpointing plus one layer's worth being recomputed;
- attention: the implementation `choose_attention` picks for the family (SDPA where transformers
  has it, else FlexAttention on a GPU, else eager). SDPA, flex and flash attention keep memory
  linear in length (their score blocks live in on-chip memory); SDPA still gets a dense boolean
  mask (sequences × L² bytes) when a padded micro-batch holds several sequences. Eager
  materialises heads × L × (L + 1) scores: two saved copies per layer kept for the backward (all
  layers without checkpointing, the one being recomputed with it) and three transient ones;
- logits: one chunk of `logit_chunk_tokens` rows × vocabulary, float32, about three live copies
  (logits, probabilities, their gradient), plus the head's output in the weights' dtype;
- sampling: vLLM's reservation (`gpu_memory_utilization` × the GPU) while awake, which must
  itself hold its weights and the KV cache of one `max_model_len` sequence; the hf sampler keeps
  a KV cache for `sample_batch_size` sequences instead;
- a sleeping vLLM engine (`sleeping_engine_bytes`): its own process's CUDA context and workspaces
  (vLLM logs them as "non_torch_memory", about 1.3 GiB on an 80 GB GPU) and its CUDA-graph pool,
  which level-1 sleep does not release (about 1.5 GiB measured on a GB200 with vLLM 0.23; none
  with `enforce_eager`): 3 GiB, 1.5 GiB eager;
- MXFP4 checkpoints (gpt-oss): the trainer dequantises them to bf16 at load time (transformers'
  MXFP4 kernels have no backward), so the weights cost 2 bytes per parameter, about 3.8 times their
  4.25-bit size on disk; the plan says so;
- 1.5 GiB for the CUDA context, allocator slack and kernels' workspaces.

It is an estimate (activations depend on the attention kernel and allocator fragmentation), meant
to catch configurations that are off by a large factor; `scripts/gpu_llm_check.py` prints it
beside the measured peak. `python -m ttd_agent.policy.memory` prints the table of docs/llm.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ttd_agent.policy.settings import ATTENTION, LLMSettings

log = logging.getLogger(__name__)

GIB = 1024**3
OVERHEAD = 1.5 * GIB
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
ENGINE_CONTEXT = 1.5 * GIB
"""A sleeping vLLM engine's process: CUDA context, cuBLAS/NCCL workspaces (its "non_torch_memory")."""
CUDA_GRAPH_POOL = 1.5 * GIB
"""vLLM's captured CUDA graphs, kept through level-1 sleep (unless `enforce_eager`)."""
MXFP4_BITS = 4.25
"""Bits per MXFP4 weight: 4-bit values and one 8-bit scale per block of 32."""
_SUPPORT_FLAG = {"sdpa": "_supports_sdpa", "flex_attention": "_supports_flex_attn",
                 "flash_attention_2": "_supports_flash_attn"}


@dataclass(frozen=True)
class AttentionChoice:
    """The attention implementation a model is loaded with, and why."""

    implementation: str
    reason: str


def choose_attention(model_class: Any, device: str, requested: str = "auto") -> AttentionChoice:
    """The attention implementation for `model_class` (a transformers `*ForCausalLM` class) on
    `device`: SDPA where the family supports it (torch's flash / memory-efficient kernels), else
    FlexAttention on a CUDA GPU (Triton, blockwise, attention sinks included: gpt-oss), else eager
    (heads × L × L scores per layer, which the pre-flight counts). `requested` other than "auto"
    is used as asked, after checking the family supports it."""
    name = getattr(model_class, "__name__", str(model_class))
    supported = [impl for impl, flag in _SUPPORT_FLAG.items() if getattr(model_class, flag, False)] + ["eager"]
    if requested not in ATTENTION:
        raise ValueError(f"--attention must be one of {', '.join(ATTENTION)}, got {requested!r}")
    if requested != "auto":
        if requested not in supported:
            raise ValueError(f"{name} does not support --attention {requested} in this transformers; it supports "
                             f"{', '.join(supported)}")
        return AttentionChoice(requested, "asked for with --attention")
    if "sdpa" in supported:
        return AttentionChoice("sdpa", "torch SDPA (flash / memory-efficient kernels): memory linear in length")
    if "flex_attention" in supported and device.startswith("cuda"):
        return AttentionChoice("flex_attention", f"{name} has no SDPA path in transformers; FlexAttention "
                                                 "(blockwise, Triton) keeps memory linear in length")
    later = " (on a CUDA GPU FlexAttention would be used)" if "flex_attention" in supported else ""
    return AttentionChoice("eager", f"{name} supports no memory-bounded attention here{later}: heads × L × L "
                                    "scores per layer")


def is_mxfp4(config: Any) -> bool:
    """Whether a transformers config (or its dict) describes an MXFP4-quantised checkpoint."""
    quantization = (config.get("quantization_config") if isinstance(config, dict)
                    else getattr(config, "quantization_config", None)) or {}
    method = quantization.get("quant_method") if isinstance(quantization, dict) else \
        getattr(quantization, "quant_method", None)
    return str(method) == "mxfp4"


def causal_lm_class(config: Any) -> Any:
    """The transformers `*ForCausalLM` class of a config (what `AutoModelForCausalLM` would build)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM._model_mapping[config if isinstance(config, type) else type(config)]


def sleeping_engine_bytes(settings: LLMSettings) -> float:
    """What a vLLM engine keeps on the GPU while asleep (level 1; see the module docstring)."""
    return ENGINE_CONTEXT + (0.0 if settings.enforce_eager else CUDA_GRAPH_POOL)


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
    model_type: str = ""
    mxfp4: bool = False
    """The checkpoint's expert weights are MXFP4 (gpt-oss); the trainer dequantises them to bf16."""

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
                   experts_per_token=get("num_experts_per_tok") or get("experts_per_token") or 1,
                   model_type=get("model_type", "") or "", mxfp4=is_mxfp4(config))

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def expert_params(self) -> int:
        """Parameters of the routed experts' MLPs (what MXFP4 quantises)."""
        return 3 * self.hidden * self.intermediate * self.experts * self.layers if self.experts > 1 else 0

    def checkpoint_bytes(self) -> float:
        """The checkpoint's size: MXFP4 experts at 4.25 bits, the rest in bf16."""
        experts = self.expert_params() if self.mxfp4 else 0
        return experts * MXFP4_BITS / 8 + (self.params() - experts) * 2

    def attention_bytes(self, implementation: str, length: int, sequences: int, width: int,
                        checkpointing: bool) -> float:
        """Attention memory of one micro-batch beyond the per-token activations (see the module
        docstring): eager's L × L scores, SDPA's dense padding mask, nothing for blockwise kernels."""
        if implementation == "eager":
            kept = 1 if checkpointing else self.layers
            return float(sequences * self.heads * length * (length + 1) * width * (2 * kept + 3))
        if implementation == "sdpa" and sequences > 1:
            return float(sequences * length * length)
        return 0.0

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
    "Qwen/Qwen2.5-1.5B-Instruct": Architecture("Qwen2.5-1.5B", 1536, 28, 12, 2, 128, 8960, 151936, tied=True, model_type="qwen2"),
    "Qwen/Qwen2.5-Coder-7B-Instruct": Architecture("Qwen2.5-7B", 3584, 28, 28, 4, 128, 18944, 152064, model_type="qwen2"),
    "Qwen/Qwen2.5-14B-Instruct": Architecture("Qwen2.5-14B", 5120, 48, 40, 8, 128, 13824, 152064, model_type="qwen2"),
    "Qwen/Qwen3-8B": Architecture("Qwen3-8B", 4096, 36, 32, 8, 128, 12288, 151936, model_type="qwen3"),
    "openai/gpt-oss-20b": Architecture("gpt-oss-20b", 2880, 24, 64, 8, 64, 2880, 201088, experts=32,
                                       experts_per_token=4, model_type="gpt_oss", mxfp4=True),
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
    notes: list[str] = field(default_factory=list)
    """What the plan chose that a reader should know (attention implementation, MXFP4)."""

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
        return "\n".join(lines + self.notes + self.problems)


def estimate(arch: Architecture, settings: LLMSettings, *, sampler: str, lora_rank: int, full_finetune: bool,
             max_new_tokens: int, gpu_bytes: float, prompt_tokens: int = 2048,
             attention: AttentionChoice | None = None) -> MemoryPlan:
    """The memory of each phase of a step (see the module docstring); `attention` defaults to
    what `choose_attention` picks for the architecture's family on a CUDA GPU."""
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
    attention = attention or attention_for(arch, settings)
    length = min(sequence, tokens)
    attention_memory = arch.attention_bytes(attention.implementation, length, max(1, tokens // length), width,
                                            settings.gradient_checkpointing)
    plan.notes.append(f"attention: {attention.implementation} ({attention.reason})")
    if arch.mxfp4:
        plan.notes.append(f"MXFP4 experts dequantised to bf16 for LoRA training: weights {weights / GIB:.1f} GiB "
                          f"instead of {arch.checkpoint_bytes() / GIB:.1f} GiB as stored")
    engine = settings.gpu_memory_utilization * gpu_bytes if sampler == "vllm" else 0.0
    plan.update = {"weights": weights, "LoRA+Adam" if not full_finetune else "grads+Adam+reference": training,
                   f"activations ({tokens} tokens)": activations,
                   f"attention ({attention.implementation})": attention_memory, "logit chunk": logits,
                   "overhead": OVERHEAD}
    if sampler == "vllm":
        if settings.sleep:
            plan.update["vLLM asleep"] = sleeping_engine_bytes(settings)
        else:
            plan.update["vLLM reservation"] = engine
        plan.sampling = {"weights": weights, "LoRA+Adam": training, "vLLM reservation": engine, "overhead": OVERHEAD}
        kv_one = arch.kv_bytes_per_token(width) * sequence
        engine_weights = arch.checkpoint_bytes() if arch.mxfp4 else weights  # vLLM serves MXFP4 as stored
        if engine < engine_weights + kv_one:
            plan.problems.append(
                f"vLLM's share ({settings.gpu_memory_utilization:g} × {gpu_bytes / GIB:.0f} GiB = {engine / GIB:.1f} GiB) "
                f"cannot hold its weights ({engine_weights / GIB:.1f} GiB) and the KV cache of one {sequence}-token "
                f"sequence ({kv_one / GIB:.1f} GiB): raise --gpu-memory-utilization or lower --max-model-len")
    else:
        rows = settings.sample_batch_size
        plan.sampling = {"weights": weights, "LoRA+Adam": training,
                         f"KV cache ({rows} × {sequence} tokens)": float(arch.kv_bytes_per_token(width) * sequence * rows),
                         "overhead": OVERHEAD}
    return plan


def attention_for(arch: Architecture, settings: LLMSettings, device: str = "cuda") -> AttentionChoice:
    """`choose_attention` for an architecture's family (by its model type), on `device`."""
    try:
        from transformers import CONFIG_MAPPING

        model_class = causal_lm_class(CONFIG_MAPPING[arch.model_type])
    except (ImportError, KeyError, ValueError):
        return AttentionChoice("eager", f"unknown family {arch.model_type!r}: counted as eager (heads × L × L)")
    return choose_attention(model_class, device, settings.attention)


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
