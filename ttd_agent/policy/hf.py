"""The `hf` backend: a Hugging Face causal LM trained with a peft LoRA adapter (or in full).

Prompts and answers. A `Renderer` (renderers.py) turns a prompt into token ids (the chat template
of the model's family, with a fixed date, Qwen3's thinking flag or gpt-oss's reasoning effort)
and a completion into the answer the env receives (the final channel only). With a thinking
budget, completions that run out of it are continued after a forced "answer now" (two-phase
completion); the forced tokens are masked out of the loss (`Sample.loss_mask`).

Sampling. Three engines behind one token-level interface (rows of ids in, `Completion`s out):
"hf", our own batched decoding loop (left-padded prompts, the model's KV cache), not `generate`:
`generate` fills any option we leave unset from the model's `generation_config` (Qwen ships
top_k=20, top_p=0.8, a repetition penalty), which would make the sampled distribution differ
from the one trained, and it draws from the global torch RNG. Here every token is drawn from
softmax(logits / T) with the policy's own `torch.Generator` (seeded, saved in checkpoints).
"vllm" (vllm_sampler.py, a GPU) and "openai" (openai_sampler.py, any OpenAI-compatible server)
sample with the latest adapter; each row gets its own seed (`renderers.sample_seeds`), so
identical prompts draw different samples. A completion ends at a stop token (the renderer's
and the model's EOS), which stays in `completion_ids` so its log-prob is trained, or at the
token limit (`finished=False`).

Temperature convention (the same as the embedded policy). The policy's distribution is
softmax(logits / T); `sample(temperature=T)` with T > 0 sets `policy.temperature = T`, and
`logprobs()`/`update()` use it. T = 0 is greedy (log-probs reported as 0).

Importance ratio. `update` weighs each token by exp(logp_new - logp_sampled) with the log-probs
the sampler reported (`logprobs="sampler"`, the reference's loss: it also corrects for the
numerical gap between vLLM's kernels and the trainer's); `logprobs="recompute"` replaces them by
the trainer's own forward first (ratio exactly 1 at the first update).

Loading. The attention implementation is chosen per family, not left to transformers' default
(`memory.choose_attention`: SDPA where the family has it, else FlexAttention on a GPU, else eager
with a warning; gpt-oss has no SDPA path, and its eager attention materialises heads × L × L
scores). MXFP4 checkpoints (gpt-oss) are dequantised to bf16 at load (`Mxfp4Config(dequantize=
True)`): transformers' MXFP4 expert kernels cannot be trained through, and the bf16 weights cost
2 bytes per parameter (gpt-oss-20b: 39 GiB instead of 13 GiB), which the pre-flight counts.

Log-probs. Teacher forcing goes through the decoder and then `logprobs.OutputHead`: the output
embedding plus what the family's `*ForCausalLM.forward` does after it (Gemma's final soft-cap,
Cohere's `logit_scale`, Granite's `logits_scaling`). At load time `check_output_head` compares it
with the model's own forward on a few tokens and refuses a family it does not reproduce.

Memory. Teacher-forced scoring never builds (tokens × vocabulary) logits for a whole batch: the
decoder's hidden states go through the LM head in chunks of `logit_chunk_tokens` rows
(logprobs.py). Micro-batches hold at most `micro_batch_size` sequences and `micro_batch_tokens`
padded tokens; `gradient_checkpointing` recomputes layer activations in the backward pass.
With the vLLM engine on the same GPU, the engine sleeps (weights to CPU, KV cache freed) during
each update and wakes before the next sample (`sleep`).

Training. One AdamW step per `update` (by default betas 0.9/0.95 and eps 1e-12, TTT-Discover's
reference Adam; `adam_betas`/`adam_eps` for other recipes, e.g. verl's 0.9/0.999, 1e-8) on
the trainable parameters, gradients accumulated over micro-batches, loss normalised over the
whole batch. The KL reference is the base model, obtained by running the same weights with the
adapter disabled (`peft`'s `disable_adapter()`): no second copy. Full fine-tuning
(`full_finetune=True`, for small models) keeps a frozen copy as the reference.

LoRA defaults: rank 32 and alpha 32 (so the update scale alpha / rank is 1 at rank 32), on every
linear layer ("all-linear"); alpha is fixed rather than proportional to the rank, as in Tinker
(which TTT-Discover trained with), so the learning rate need not change with the rank.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ttd_agent.policy.base import LossConfig, Sample, TrainItem
from ttd_agent.policy.logprobs import check_output_head, output_head, post_head, token_logprobs
from ttd_agent.policy.loss import policy_gradient_loss
from ttd_agent.policy.memory import AttentionChoice, causal_lm_class, choose_attention, is_mxfp4
from ttd_agent.policy.renderers import Completion, Renderer, complete, sample_seeds
from ttd_agent.policy.settings import LLMSettings

log = logging.getLogger(__name__)

OnSample = Callable[[int, int, Sample], None]
"""Called as (prompt index, sample index, sample) the moment a sample is complete."""


def _dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if isinstance(resolved, torch.dtype):
        return resolved
    raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'bfloat16', 'float16' or 'float32'")


def token_budget_batches(lengths: Sequence[int], max_sequences: int, max_tokens: int) -> list[list[int]]:
    """Consecutive index groups with at most `max_sequences` members and at most `max_tokens`
    padded tokens (members × the longest member); a sequence longer than the budget goes alone."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i, n in enumerate(lengths):
        if current and (len(current) >= max_sequences or (len(current) + 1) * max(longest, n) > max_tokens):
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        batches.append(current)
    return batches


class HFPolicy:
    """A `Policy` (kind "llm") over a transformers causal LM; see the module docstring.

    Engine and policy settings come from `settings` (an `LLMSettings`), with keyword overrides of
    its fields (`micro_batch_size=4`); `vllm_kwargs` passes extra `vllm.LLM` arguments."""

    kind = "llm"

    def __init__(self, model: str, *, lora_rank: int = 32, lora_alpha: float | None = None, lora_dropout: float = 0.0,
                 target_modules: Sequence[str] | None = None, full_finetune: bool = False, lr: float = 4e-5,
                 weight_decay: float = 0.0, adam_betas: tuple[float, float] = (0.9, 0.95), adam_eps: float = 1e-12,
                 device: str | None = None, seed: int = 0,
                 sampler: Literal["hf", "vllm", "openai"] = "hf", settings: LLMSettings | None = None,
                 vllm_kwargs: dict[str, Any] | None = None, **overrides: Any):
        import transformers
        from packaging.version import Version
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if sampler not in ("hf", "vllm", "openai"):
            raise ValueError(f"sampler must be 'hf', 'vllm' or 'openai', got {sampler!r}")
        if sampler != "hf" and full_finetune:
            raise ValueError(f"sampler={sampler!r} follows the policy through its LoRA adapter; it cannot with "
                             f"full_finetune=True (use sampler='hf')")
        self.settings = LLMSettings.from_dict({**(settings.__dict__ if settings else {}), **overrides})
        cfg = self.settings
        self.model_name = str(model)
        self.seed = seed
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = _dtype(cfg.dtype, self.device)
        self.lora = not full_finetune
        self.lora_rank, self.lora_alpha = lora_rank, float(lora_alpha if lora_alpha is not None else 32)
        self.temperature = 1.0

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self.tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError(f"the tokenizer of {self.model_name} has neither a pad nor an EOS token")
        self.renderer = Renderer(self.tokenizer, cfg.renderer, thinking=cfg.thinking,
                                 reasoning_effort=cfg.reasoning_effort, date=cfg.date,
                                 system_prompt=cfg.system_prompt)
        dtype_kw = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
        load_kwargs = self._load_kwargs(cfg.attention)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # peft's LoRA A init draws from the global RNG
            base = AutoModelForCausalLM.from_pretrained(self.model_name, **{dtype_kw: self.dtype},
                                                        **load_kwargs).to(self.device)
            self._post_head = post_head(base)
            probe = torch.tensor([self.tokenizer("def f(x): return x * 2  # probe").input_ids[:16]],
                                 device=self.device)
            check_output_head(base, output_head(base, self._post_head), probe)
            eos = base.generation_config.eos_token_id
            eos = set(eos if isinstance(eos, list) else [eos]) | set(self.renderer.stop_ids)
            self.renderer.stop_ids = sorted(i for i in eos if i is not None)
            if cfg.gradient_checkpointing:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if self.lora:
                from peft import LoraConfig, get_peft_model

                config = LoraConfig(r=lora_rank, lora_alpha=self.lora_alpha, lora_dropout=lora_dropout,
                                    target_modules=list(target_modules) if target_modules else "all-linear",
                                    task_type="CAUSAL_LM")
                self.model = get_peft_model(base, config)
                self.reference = None
            else:
                import copy

                self.model = base
                self.reference = copy.deepcopy(base).eval().requires_grad_(False)
        self.model.eval()
        forward = inspect.signature(base.forward).parameters
        self._keep_arg = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in forward), None)
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"  # renamed in transformers 5.x
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=lr, betas=tuple(adam_betas), eps=adam_eps,
                                           weight_decay=weight_decay)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.version = 0
        """Number of updates so far (names the adapter the sampler must use)."""
        self.calls = 0
        """Sampling calls so far (with the seed, it derives each row's sampling seed)."""

        self.engine = None
        if sampler != "hf":
            self._adapters = tempfile.TemporaryDirectory(prefix="ttd-adapters-")
            self._adapter_dirs: list[Path] = []
        if sampler == "vllm":
            from ttd_agent.policy.vllm_sampler import VLLMSampler

            self.engine = VLLMSampler(self.model_name, max_lora_rank=lora_rank, seed=seed, settings=cfg,
                                      **(vllm_kwargs or {}))
        elif sampler == "openai":
            from ttd_agent.policy.openai_sampler import OpenAISampler

            self.engine = OpenAISampler(cfg.served_model or self.model_name, settings=cfg)

    def _load_kwargs(self, attention: str) -> dict[str, Any]:
        """`from_pretrained` arguments: the chosen attention implementation (`self.attention`) and,
        for an MXFP4 checkpoint, dequantisation to bf16."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.model_name)
        self.attention: AttentionChoice = choose_attention(causal_lm_class(config), self.device.type, attention)
        (log.warning if self.attention.implementation == "eager" and self.device.type == "cuda" else log.info)(
            "attention: %s (%s)", self.attention.implementation, self.attention.reason)
        kwargs: dict[str, Any] = {"attn_implementation": self.attention.implementation}
        if is_mxfp4(config):
            from transformers import Mxfp4Config

            kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
            log.info("MXFP4 weights dequantised to bf16 for LoRA training (2 bytes per parameter)")
        return kwargs

    @property
    def eos_ids(self) -> list[int]:
        """Tokens that end a completion: the renderer's stop tokens and the model's EOS."""
        return self.renderer.stop_ids

    @eos_ids.setter
    def eos_ids(self, ids: list[int]) -> None:
        self.renderer.stop_ids = list(ids)

    # ---- prompts

    def render(self, prompt: str) -> list[int]:
        """Token ids of `prompt` as the model sees it (see `Renderer.prompt_ids`)."""
        return self.renderer.prompt_ids(prompt)

    # ---- sampling

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], n: int, *, temperature: float, max_new_tokens: int,
               on_sample: OnSample | None = None) -> list[list[Sample]]:
        """`n` completions per prompt; `on_sample` hears of each one as soon as it is complete, so
        its evaluation can start while the rest are sampled (with `logprobs="recompute"`, once
        all are sampled and rescored)."""
        if n < 1 or temperature < 0 or max_new_tokens < 1:
            raise ValueError(f"need n >= 1, temperature >= 0 and max_new_tokens >= 1, got n={n}, "
                             f"temperature={temperature}, max_new_tokens={max_new_tokens}")
        if temperature > 0:
            self.temperature = float(temperature)
        prompt_ids = [self.render(p) for p in prompts]
        owners = [(i, j) for i in range(len(prompts)) for j in range(n)]
        rows = [prompt_ids[i] for i, _ in owners]
        out: list[list[Sample | None]] = [[None] * n for _ in prompts]
        recompute = self.engine is not None and self.settings.logprobs == "recompute" and temperature > 0

        def finish(k: int, c: Completion) -> None:
            i, j = owners[k]
            sample = Sample(prompt=prompts[i], text=self.renderer.answer(c.ids), prompt_ids=list(rows[k]),
                            completion_ids=list(c.ids), logprobs=c.logprobs, entropy=c.entropy,
                            finished=c.finished, loss_mask=c.loss_mask, error=c.error)
            out[i][j] = sample
            if on_sample is not None and not recompute:
                on_sample(i, j, sample)

        seeds = sample_seeds(self.seed, self.calls, len(rows))
        later = sample_seeds(self.seed, self.calls, len(rows), phase=1)
        self.calls += 1
        complete(self._generate, self.renderer, rows, temperature=temperature, max_new_tokens=max_new_tokens,
                 seeds=seeds, seeds_phase2=later, thinking_budget=self.settings.thinking_budget,
                 answer_budget=self.settings.answer_budget, on_row=finish)
        groups = [[s for s in group if s is not None] for group in out]
        if recompute:
            flat = [s for g in groups for s in g if s.error is None]
            for s, (logp, entropy) in zip(flat, self._score(self.model, flat, temperature, entropy=True), strict=True):
                s.logprobs, s.entropy = logp if s.loss_mask is None else np.where(s.loss_mask > 0, logp, 0.0), entropy
            if on_sample is not None:
                for i, group in enumerate(groups):
                    for j, s in enumerate(group):
                        on_sample(i, j, s)
        return groups

    def request_stats(self) -> dict[str, int]:
        """The server requests and tokens since the last call (`--sampler openai`); {} otherwise."""
        report = getattr(self.engine, "request_stats", None)
        return report() if callable(report) else {}

    def _generate(self, rows: list[list[int]], temperature: float, max_new_tokens: int, seeds: list[int],
                  on_row: Callable[[int, Completion], None]) -> None:
        """The token-level engine call: one Completion per row, reported through `on_row`."""
        if self.engine is not None:
            self.engine.generate(rows, temperature, max_new_tokens, seeds, on_row,
                                 adapter_dir=self._current_adapter(), stop_ids=self.eos_ids)
            return
        self.model.eval()
        size = self.settings.sample_batch_size
        for start in range(0, len(rows), size):
            self._decode(rows[start:start + size], temperature, max_new_tokens,
                         on_row=lambda k, completion, start=start: on_row(start + k, completion))

    def _decode(self, rows: list[list[int]], temperature: float, max_new_tokens: int,
                on_row: Callable[[int, Completion], None] | None = None) -> list[Completion]:
        """Sample one completion per row; `on_row` hears of each row the step it ends (EOS), and
        of the rows cut at `max_new_tokens` at the end."""
        B, P = len(rows), max(len(r) for r in rows)
        ids = torch.full((B, P), self.pad_id, dtype=torch.long)
        attention = torch.zeros((B, P), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, P - len(r):] = torch.tensor(r)
            attention[i, P - len(r):] = 1
        ids, attention = ids.to(self.device), attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        keep = {self._keep_arg: 1} if self._keep_arg else {}
        out = self.model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True, **keep)
        cache, logits = getattr(out, self._cache_arg), out.logits[:, -1].float()
        next_position = positions[:, -1] + 1
        eos = torch.tensor(self.eos_ids, device=self.device)

        tokens = torch.full((B, max_new_tokens), self.pad_id, dtype=torch.long, device=self.device)
        logps = torch.zeros((B, max_new_tokens), device=self.device)
        entropies = torch.zeros((B, max_new_tokens), device=self.device)
        lengths = torch.full((B,), max_new_tokens, dtype=torch.long, device=self.device)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        for t in range(max_new_tokens):
            if temperature > 0:
                logp = F.log_softmax(logits / temperature, dim=-1)
                probs = logp.exp()
                token = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
                logps[:, t] = logp.gather(1, token[:, None]).squeeze(1)
                entropies[:, t] = -(probs * logp).nan_to_num().sum(-1)
            else:
                token = logits.argmax(-1)
            token = torch.where(done, self.pad_id, token)
            tokens[:, t] = token
            ended = ~done & torch.isin(token, eos)
            lengths[ended] = t + 1
            done |= ended
            if on_row is not None and bool(ended.any()):
                for i in ended.nonzero().flatten().tolist():
                    on_row(i, Completion(ids=tokens[i, :t + 1].tolist(), logprobs=logps[i, :t + 1].cpu().numpy().copy(),
                                         finished=True, entropy=entropies[i, :t + 1].cpu().numpy().copy()))
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            attention = torch.cat([attention, torch.ones((B, 1), dtype=attention.dtype, device=self.device)], 1)
            out = self.model(input_ids=token[:, None], attention_mask=attention, position_ids=next_position[:, None],
                             use_cache=True, **{self._cache_arg: cache})
            cache, logits = getattr(out, self._cache_arg), out.logits[:, -1].float()
            next_position = next_position + 1

        tokens_l, lengths_l, done_l = tokens.tolist(), lengths.tolist(), done.tolist()
        logps_np, ent_np = logps.cpu().numpy(), entropies.cpu().numpy()
        out = [Completion(ids=tokens_l[i][:m], logprobs=logps_np[i, :m].copy(), finished=done_l[i],
                          entropy=ent_np[i, :m].copy()) for i, m in enumerate(lengths_l)]
        if on_row is not None:
            for i, completion in enumerate(out):
                if not completion.finished:
                    on_row(i, completion)
        return out

    # ---- teacher forcing

    @staticmethod
    def _causal_lm(model: torch.nn.Module) -> torch.nn.Module:
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _forward(self, model: torch.nn.Module, samples: Sequence[Sample], temperature: float,
                 entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(b, C) log-probs of the completion tokens at `temperature`, their (b, C) mask of real
        tokens, and the (b, C) entropies when asked. Sequences are left-padded so every completion
        ends in the last column; C is the longest completion. The LM head runs in chunks over the
        real tokens only (logprobs.py), never over the whole (b, C, vocabulary)."""
        seqs = [list(s.prompt_ids) + list(s.completion_ids) for s in samples]
        lengths = [len(s.completion_ids) for s in samples]
        L, C = max(len(s) for s in seqs), max(lengths)
        ids = torch.full((len(seqs), L), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), L), dtype=torch.long)
        mask = torch.zeros((len(seqs), C), dtype=torch.bool)
        for i, (seq, c) in enumerate(zip(seqs, lengths, strict=True)):
            ids[i, L - len(seq):] = torch.tensor(seq)
            attention[i, L - len(seq):] = 1
            mask[i, C - c:] = True
        ids, attention, mask = ids.to(self.device), attention.to(self.device), mask.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        lm = self._causal_lm(model)
        hidden = lm.get_decoder()(input_ids=ids, attention_mask=attention, position_ids=positions,
                                  use_cache=False).last_hidden_state
        rows = hidden[:, L - C - 1:L - 1][mask]  # the positions that predict completion tokens
        targets = ids[:, L - C:][mask]
        logp, ent = token_logprobs(output_head(lm, self._post_head), rows, targets, temperature=temperature,
                                   chunk_tokens=self.settings.logit_chunk_tokens, with_entropy=entropy)
        full = torch.zeros(mask.shape, dtype=logp.dtype, device=self.device)
        logp_bc = full.masked_scatter(mask, logp)
        ent_bc = full.masked_scatter(mask, ent.detach()) if ent is not None else None
        return logp_bc, mask.to(logp.dtype), ent_bc

    def _micro_batches(self, samples: Sequence[Any]) -> Iterator[Sequence[Any]]:
        """Micro-batches by sequence count and token budget (see `token_budget_batches`)."""
        lengths = [len(s.prompt_ids) + len(s.completion_ids)
                   for s in (x.sample if isinstance(x, TrainItem) else x for x in samples)]
        for batch in token_budget_batches(lengths, self.settings.micro_batch_size, self.settings.micro_batch_tokens):
            yield [samples[i] for i in batch]

    @torch.no_grad()
    def _score(self, model: torch.nn.Module, samples: Sequence[Sample], temperature: float,
               entropy: bool = False) -> list[tuple[np.ndarray, np.ndarray | None]]:
        model.eval()
        out = []
        for chunk in self._micro_batches(samples):
            logp, _, ent = self._forward(model, chunk, temperature, entropy)
            logp = logp.float().cpu().numpy()
            ent = ent.float().cpu().numpy() if ent is not None else None
            C = logp.shape[1]
            for i, s in enumerate(chunk):
                c = len(s.completion_ids)
                out.append((logp[i, C - c:].copy(), None if ent is None else ent[i, C - c:].copy()))
        return out

    def logprobs(self, samples: Sequence[Sample], *, temperature: float | None = None) -> list[np.ndarray]:
        """Log-probs of each completion under the current weights at `temperature` (default: the
        latest sampling temperature)."""
        return [logp for logp, _ in self._score(self.model, samples, temperature or self.temperature)]

    def reference_logprobs(self, samples: Sequence[Sample], *, temperature: float | None = None) -> list[np.ndarray]:
        """Log-probs under the reference policy (the base model: adapter disabled)."""
        with self._reference() as model:
            return [logp for logp, _ in self._score(model, samples, temperature or self.temperature)]

    @contextlib.contextmanager
    def _reference(self) -> Iterator[torch.nn.Module]:
        if self.lora:
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.reference

    def _padded(self, samples: Sequence[Sample], values: Callable[[Sample], np.ndarray | None], C: int,
                default: float) -> torch.Tensor:
        """(b, C) tensor of per-token values, right-aligned like `_forward`'s columns."""
        out = torch.full((len(samples), C), default, device=self.device)
        for i, s in enumerate(samples):
            v = values(s)
            if v is not None:
                out[i, C - len(s.completion_ids):] = torch.as_tensor(np.asarray(v, dtype=np.float32), device=self.device)
        return out

    def update(self, items: Sequence[TrainItem], loss: LossConfig) -> dict[str, float]:
        """One AdamW step on `items` (micro-batched; gradients clipped to `loss.max_grad_norm`).
        Tokens with loss mask 0 (forced by two-phase completion) take no part."""
        items = [it for it in items if it.sample.completion_ids]
        trained = [float(it.sample.loss_mask.sum()) if it.sample.loss_mask is not None else len(it.sample.completion_ids)
                   for it in items]
        tokens = sum(trained)
        stats = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "ratio_mean": 0.0, "ratio_max": 1.0,
                 "grad_norm": 0.0, "tokens": float(tokens)}
        if not items or tokens == 0:
            stats["ratio_mean"] = 1.0
            return stats
        if self.engine is not None:
            self.engine.sleep()
        kl_offset = self._kl_offset(items, loss) if loss.kl_center else 0.0
        self.optimizer.zero_grad(set_to_none=True)
        ratio_max = 0.0
        for chunk in self._micro_batches(items):
            samples = [it.sample for it in chunk]
            logp_ref = None
            if loss.kl_coef > 0:
                with torch.no_grad(), self._reference() as reference:
                    reference.eval()
                    logp_ref = self._forward(reference, samples, self.temperature)[0]
            self.model.train()
            logp_new, mask, _ = self._forward(self.model, samples, self.temperature)
            C = mask.shape[1]
            mask = mask * self._padded(samples, lambda s: s.loss_mask, C, 1.0)
            logp_sampled = self._padded(samples, lambda s: s.logprobs, C, 0.0)
            advantages = torch.tensor([it.advantage for it in chunk], dtype=torch.float32, device=self.device)
            value, part = policy_gradient_loss(logp_new, logp_sampled, advantages, mask, loss, logp_ref,
                                               total_sequences=len(items), total_tokens=tokens, kl_offset=kl_offset)
            value.backward()
            for key in ("loss", "kl", "clip_fraction", "ratio_mean"):
                stats[key] += part[key]
            ratio_max = max(ratio_max, part["ratio_max"])
        self.model.eval()
        stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.trainable, loss.max_grad_norm))
        stats["ratio_max"] = ratio_max
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.version += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # hand the activations' memory back before the engine wakes
        return stats

    @torch.no_grad()
    def _kl_offset(self, items: Sequence[TrainItem], loss: LossConfig) -> float:
        """The batch mean of log(sampled / reference) over trained tokens: the reference centres
        the per-token KL penalty by it, so the penalty shifts no sequence's mean advantage."""
        if loss.kl_coef <= 0 or loss.kl_mode != "reward":
            return 0.0
        samples = [it.sample for it in items]
        total = count = 0.0
        for s, ref in zip(samples, self.reference_logprobs(samples), strict=True):
            weight = s.loss_mask if s.loss_mask is not None else np.ones(len(ref))
            total += float(((np.asarray(s.logprobs) - ref) * weight).sum())
            count += float(weight.sum())
        return total / max(count, 1.0)

    # ---- adapters for the sampler

    def _current_adapter(self) -> Path | None:
        """The adapter directory for the sampler: None before the first update (the adapter is
        then a no-op). Keeps the newest `keep_adapters` versions on disk, deletes older ones."""
        if self.version == 0:
            return None
        path = Path(self._adapters.name) / f"v{self.version:06d}"
        if not self._adapter_dirs or self._adapter_dirs[-1] != path:
            self.model.save_pretrained(path)
            self._adapter_dirs.append(path)
            while len(self._adapter_dirs) > self.settings.keep_adapters:
                old = self._adapter_dirs.pop(0)
                self.engine.forget_adapter(old)
                shutil.rmtree(old, ignore_errors=True)
        return path

    # ---- checkpoints

    def save(self, directory: Path) -> None:
        """`adapter/` (peft) or `model/` (full fine-tuning), and `trainer_state.pt` (optimizer, RNG,
        temperature, update and sampling-call counters)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory / ("adapter" if self.lora else "model"))
        state = {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                 "temperature": self.temperature, "version": self.version, "calls": self.calls}
        torch.save(state, directory / "trainer_state.pt")
        info = {"model": self.model_name, "lora": self.lora, "lora_rank": self.lora_rank,
                "lora_alpha": self.lora_alpha}
        (directory / "policy.json").write_text(json.dumps(info, indent=2))

    def load(self, directory: Path) -> None:
        """Restore what `save` wrote into this policy (same base model and LoRA shape)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        if self.lora:
            from peft import set_peft_model_state_dict

            weights = load_file(directory / "adapter" / "adapter_model.safetensors", device=str(self.device))
            result = set_peft_model_state_dict(self.model, weights)
            if result.unexpected_keys:
                raise ValueError(f"adapter in {directory} does not fit this model: unexpected keys "
                                 f"{result.unexpected_keys[:3]}...")
        else:
            from transformers import AutoModelForCausalLM

            saved = AutoModelForCausalLM.from_pretrained(directory / "model")
            self.model.load_state_dict(saved.state_dict())
        state = torch.load(directory / "trainer_state.pt", weights_only=True, map_location="cpu")
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.temperature = float(state["temperature"])
        self.version = int(state["version"])
        self.calls = int(state.get("calls", 0))
