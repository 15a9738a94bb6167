"""The `hf` backend: a Hugging Face causal LM trained with a peft LoRA adapter (or in full).

Prompts. With `use_chat_template` and a tokenizer that has a chat template, a prompt is one user
turn (after an optional system turn) rendered with `add_generation_prompt=True`; otherwise the raw
prompt is tokenized with the tokenizer's special tokens. `Sample.prompt_ids` holds the exact ids.

Sampling. Our own batched decoding loop (left-padded prompts, the model's KV cache), not
`generate`: `generate` fills any option we leave unset from the model's `generation_config`
(Qwen ships top_k=20, top_p=0.8, a repetition penalty), which would make the sampled distribution
differ from the one trained, and it draws from the global torch RNG. Here every token is drawn
from softmax(logits / T) with the policy's own `torch.Generator` (seeded, saved in checkpoints),
and the stored log-prob and entropy are those of that distribution. A completion ends at an EOS
token (the tokenizer's and the generation config's), which stays in `completion_ids` so its
log-prob is trained, or at `max_new_tokens` (`finished=False`). `text` is decoded without special
tokens.

Temperature convention (the same as the embedded policy). The policy's distribution is
softmax(logits / T); `sample(temperature=T)` with T > 0 sets `policy.temperature = T`, and
`logprobs()`/`update()` use it, so a fresh sample's importance ratio is 1 (up to the float
differences between cached decoding and a full forward: ~1e-6 in float32, larger in bfloat16).
T = 0 is greedy (log-probs reported as 0, `temperature` unchanged).

Training. `update` runs teacher-forced forwards in micro-batches of `micro_batch_size` sequences
(gradients accumulate; the loss is normalised over the whole batch) and takes one AdamW step on
the trainable parameters. The KL reference is the base model, obtained by running the same
weights with the adapter disabled (`peft`'s `disable_adapter()`): no second copy. Full
fine-tuning (`full_finetune=True`, for small models) keeps a frozen copy as the reference.

LoRA defaults: rank 32 and alpha 32 (so the update scale alpha / rank is 1 at rank 32), on every
linear layer ("all-linear"); alpha is fixed rather than proportional to the rank, as in Tinker
(which TTT-Discover trained with), so the learning rate need not change with the rank.

vLLM. `sampler="vllm"` samples through `VLLMSampler` (GPU) with the latest adapter, saved after each
update. By default (`vllm_logprobs="recompute"`) the stored log-probs and entropies are then
recomputed with this model's forward (as verl does), so the update starts exactly on-policy for
the trainer's numerics; "sampler" keeps vLLM's own (processed, temperature-scaled) log-probs.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ttd_agent.policy.base import LossConfig, Sample, TrainItem
from ttd_agent.policy.loss import policy_gradient_loss

log = logging.getLogger(__name__)


def _dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if isinstance(resolved, torch.dtype):
        return resolved
    raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'bfloat16', 'float16' or 'float32'")


class HFPolicy:
    """A `Policy` (kind "llm") over a transformers causal LM; see the module docstring."""

    kind = "llm"

    def __init__(self, model: str, *, lora_rank: int = 32, lora_alpha: float | None = None, lora_dropout: float = 0.0,
                 target_modules: Sequence[str] | None = None, full_finetune: bool = False, lr: float = 4e-5,
                 weight_decay: float = 0.0, device: str | None = None, dtype: str | torch.dtype | None = None,
                 use_chat_template: bool = True, system_prompt: str | None = None, seed: int = 0,
                 sampler: Literal["hf", "vllm"] = "hf", vllm_kwargs: dict[str, Any] | None = None,
                 vllm_logprobs: Literal["recompute", "sampler"] = "recompute", micro_batch_size: int = 8,
                 sample_batch_size: int = 64):
        import transformers
        from packaging.version import Version
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if sampler not in ("hf", "vllm"):
            raise ValueError(f"sampler must be 'hf' or 'vllm', got {sampler!r}")
        if sampler == "vllm" and full_finetune:
            raise ValueError("sampler='vllm' follows the policy through its LoRA adapter; it cannot with "
                             "full_finetune=True (use sampler='hf')")
        if micro_batch_size < 1 or sample_batch_size < 1:
            raise ValueError("micro_batch_size and sample_batch_size must be >= 1")
        self.model_name = str(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = _dtype(dtype, self.device)
        self.lora = not full_finetune
        self.lora_rank, self.lora_alpha = lora_rank, float(lora_alpha if lora_alpha is not None else 32)
        self.use_chat_template, self.system_prompt = use_chat_template, system_prompt
        self.micro_batch_size, self.sample_batch_size = micro_batch_size, sample_batch_size
        self.vllm_logprobs = vllm_logprobs
        self.temperature = 1.0

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self.tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError(f"the tokenizer of {self.model_name} has neither a pad nor an EOS token")
        dtype_kw = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # peft's LoRA A init draws from the global RNG
            base = AutoModelForCausalLM.from_pretrained(self.model_name, **{dtype_kw: self.dtype}).to(self.device)
            eos = base.generation_config.eos_token_id
            eos = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
            self.eos_ids = sorted(i for i in eos if i is not None)
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
        forward = inspect.signature((base if self.lora else self.model).forward).parameters
        self._keep_arg = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in forward), None)
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"  # renamed in transformers 5.x
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=lr, weight_decay=weight_decay)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.version = 0
        """Number of updates so far (names the adapter the vLLM sampler must use)."""

        self.vllm = None
        if sampler == "vllm":
            from ttd_agent.policy.vllm_sampler import VLLMSampler

            self.vllm = VLLMSampler(self.model_name, max_lora_rank=lora_rank, seed=seed, **(vllm_kwargs or {}))
            self._adapters = tempfile.TemporaryDirectory(prefix="ttd-adapters-")
            self._adapter_dir: Path | None = None

    # ---- prompts

    def render(self, prompt: str) -> list[int]:
        """Token ids of `prompt` as the model sees it (chat template when there is one)."""
        tok = self.tokenizer
        if self.use_chat_template and getattr(tok, "chat_template", None):
            messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
            messages.append({"role": "user", "content": prompt})
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return list(tok(text, add_special_tokens=False)["input_ids"])
        text = prompt if self.system_prompt is None else f"{self.system_prompt}\n\n{prompt}"
        return list(tok(text, add_special_tokens=True)["input_ids"])

    def _text(self, completion_ids: Sequence[int]) -> str:
        ids = list(completion_ids)
        if ids and ids[-1] in self.eos_ids:
            ids = ids[:-1]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ---- sampling

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], n: int, *, temperature: float, max_new_tokens: int) -> list[list[Sample]]:
        """`n` completions per prompt; see the module docstring for the distribution and EOS rules."""
        if n < 1 or temperature < 0 or max_new_tokens < 1:
            raise ValueError(f"need n >= 1, temperature >= 0 and max_new_tokens >= 1, got n={n}, "
                             f"temperature={temperature}, max_new_tokens={max_new_tokens}")
        if temperature > 0:
            self.temperature = float(temperature)
        prompt_ids = [self.render(p) for p in prompts]
        if self.vllm is not None:
            groups = self.vllm.sample(prompt_ids, n, temperature=temperature, max_new_tokens=max_new_tokens,
                                      adapter_dir=self._current_adapter(), prompt_texts=list(prompts))
            if self.vllm_logprobs == "recompute" and temperature > 0:
                flat = [s for g in groups for s in g]
                for s, (logp, entropy) in zip(flat, self._score(self.model, flat, temperature, entropy=True),
                                              strict=True):
                    s.logprobs, s.entropy = logp, entropy
            return groups

        self.model.eval()
        rows = [(i, ids) for i, ids in enumerate(prompt_ids) for _ in range(n)]
        out: list[list[Sample]] = [[] for _ in prompts]
        for start in range(0, len(rows), self.sample_batch_size):
            chunk = rows[start:start + self.sample_batch_size]
            for (i, ids), (tokens, logp, entropy, finished) in zip(
                    chunk, self._decode([ids for _, ids in chunk], temperature, max_new_tokens), strict=True):
                out[i].append(Sample(prompt=prompts[i], text=self._text(tokens), prompt_ids=list(ids),
                                     completion_ids=tokens, logprobs=logp, entropy=entropy, finished=finished))
        return out

    def _decode(self, rows: list[list[int]], temperature: float,
                max_new_tokens: int) -> list[tuple[list[int], np.ndarray, np.ndarray, bool]]:
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
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            attention = torch.cat([attention, torch.ones((B, 1), dtype=attention.dtype, device=self.device)], 1)
            out = self.model(input_ids=token[:, None], attention_mask=attention, position_ids=next_position[:, None],
                             use_cache=True, **{self._cache_arg: cache})
            cache, logits = getattr(out, self._cache_arg), out.logits[:, -1].float()
            next_position = next_position + 1

        tokens_l, lengths_l, done_l = tokens.tolist(), lengths.tolist(), done.tolist()
        logps_np, ent_np = logps.cpu().numpy(), entropies.cpu().numpy()
        return [(tokens_l[i][:m], logps_np[i, :m].copy(), ent_np[i, :m].copy(), done_l[i])
                for i, m in enumerate(lengths_l)]

    # ---- teacher forcing

    def _forward(self, model: torch.nn.Module, samples: Sequence[Sample],
                 temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(b, C) log-probs of the completion tokens at `temperature`, their (b, C) mask, and the
        (b, C, vocab) log-distributions they were picked from. Sequences
        are left-padded so every completion ends in the last column (row i's tokens are its last
        len(completion_ids) columns); C is the longest completion."""
        seqs = [list(s.prompt_ids) + list(s.completion_ids) for s in samples]
        lengths = [len(s.completion_ids) for s in samples]
        L, C = max(len(s) for s in seqs), max(lengths)
        ids = torch.full((len(seqs), L), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), L), dtype=torch.long)
        mask = torch.zeros((len(seqs), C))
        for i, (seq, c) in enumerate(zip(seqs, lengths, strict=True)):
            ids[i, L - len(seq):] = torch.tensor(seq)
            attention[i, L - len(seq):] = 1
            mask[i, C - c:] = 1.0
        ids, attention, mask = ids.to(self.device), attention.to(self.device), mask.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        keep = {self._keep_arg: C + 1} if self._keep_arg else {}
        logits = model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=False,
                       **keep).logits[:, -(C + 1):-1].float()
        log_dist = F.log_softmax(logits / temperature, dim=-1)
        logp = log_dist.gather(-1, ids[:, L - C:, None]).squeeze(-1)
        return logp * mask, mask, log_dist

    def _micro_batches(self, samples: Sequence[Any]) -> Iterator[Sequence[Any]]:
        for start in range(0, len(samples), self.micro_batch_size):
            yield samples[start:start + self.micro_batch_size]

    @torch.no_grad()
    def _score(self, model: torch.nn.Module, samples: Sequence[Sample], temperature: float,
               entropy: bool = False) -> list[tuple[np.ndarray, np.ndarray | None]]:
        model.eval()
        out = []
        for chunk in self._micro_batches(samples):
            logp, _, log_dist = self._forward(model, chunk, temperature)
            ent = (-(log_dist.exp() * log_dist).nan_to_num().sum(-1)).cpu().numpy() if entropy else None
            del log_dist
            logp = logp.cpu().numpy()
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

    def update(self, items: Sequence[TrainItem], loss: LossConfig) -> dict[str, float]:
        """One AdamW step on `items` (micro-batched; gradients clipped to `loss.max_grad_norm`)."""
        items = [it for it in items if it.sample.completion_ids]
        tokens = sum(len(it.sample.completion_ids) for it in items)
        stats = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "ratio_mean": 0.0, "ratio_max": 1.0,
                 "grad_norm": 0.0, "tokens": float(tokens)}
        if not items:
            stats["ratio_mean"] = 1.0
            return stats
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
            logp_sampled = torch.zeros_like(mask)
            for i, s in enumerate(samples):
                c = len(s.completion_ids)
                logp_sampled[i, C - c:] = torch.as_tensor(np.asarray(s.logprobs, dtype=np.float32), device=self.device)
            advantages = torch.tensor([it.advantage for it in chunk], dtype=torch.float32, device=self.device)
            value, part = policy_gradient_loss(logp_new, logp_sampled, advantages, mask, loss, logp_ref,
                                               total_sequences=len(items), total_tokens=tokens)
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
        return stats

    # ---- vLLM adapter sync

    def _current_adapter(self) -> Path | None:
        """The adapter directory for vLLM: None before the first update (the adapter is then a no-op)."""
        if self.version == 0:
            return None
        path = Path(self._adapters.name) / f"v{self.version:06d}"
        if self._adapter_dir != path:
            self.model.save_pretrained(path)
            self._adapter_dir = path
        return path

    # ---- checkpoints

    def save(self, directory: Path) -> None:
        """`adapter/` (peft) or `model/` (full fine-tuning), and `trainer_state.pt` (optimizer, RNG, temperature)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory / ("adapter" if self.lora else "model"))
        state = {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                 "temperature": self.temperature, "version": self.version}
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
