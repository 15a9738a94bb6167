"""The tiny embedded policy: a character-level decoder-only transformer built in code (no download).

It is the default model for CPU-scale problems (those with an `EmbeddedSpec`, e.g. LABS) and for
tests. Everything is plain torch: a pre-LN GPT (learned positional embeddings, causal attention,
GELU MLP), trained in full with AdamW.

Text and tokens. The vocabulary is printable ASCII (`string.printable` without \\x0b and \\x0c) plus
BOS, EOS and PAD; an unknown prompt character becomes '?'. The model reads BOS + prompt (the
prompt is left-truncated so prompt + completion fit `max_context`) and then writes the completion.
With `alphabet` set, every other token is masked out of the completion's distribution; with
`length` set the completion is exactly `length` tokens (no EOS, `max_new_tokens` is ignored),
otherwise it stops at EOS (which is kept in `completion_ids`, so its log-prob is trained, but not
in `text`) or at `max_new_tokens` (`finished=False`).

Temperature convention (the same in the `hf` backend). The policy's distribution is
softmax(masked logits / T). `sample(..., temperature=T)` with T > 0 draws from it, reports its
exact log-probs and entropies, and sets `policy.temperature = T`; `logprobs()` and `update()`
evaluate the same masked, T-scaled distribution, so the importance ratio of a fresh sample is
exactly 1 (up to float rounding). A trainer that samples at a different temperature between its
rollouts and its update (e.g. a validation pass) must set `policy.temperature` back before
`update`. T = 0 is greedy decoding: log-probs and entropies are reported as 0 (a point mass) and
`policy.temperature` is left unchanged. `temperature` is saved with the checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ttd_agent.policy.base import LossConfig, Sample, TrainItem
from ttd_agent.policy.loss import policy_gradient_loss

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Tokenizer: one token per printable character, plus three specials.

CHARS = "".join(c for c in string.printable if c not in "\x0b\x0c")
BOS, EOS, PAD = len(CHARS), len(CHARS) + 1, len(CHARS) + 2
VOCAB_SIZE = len(CHARS) + 3
_CHAR_ID = {c: i for i, c in enumerate(CHARS)}
_UNKNOWN = _CHAR_ID["?"]


def encode(text: str) -> list[int]:
    """Character ids of `text`; a character outside printable ASCII becomes '?'."""
    return [_CHAR_ID.get(c, _UNKNOWN) for c in text]


def decode(ids: Sequence[int]) -> str:
    """The characters of `ids`, skipping BOS/EOS/PAD."""
    return "".join(CHARS[i] for i in ids if i < len(CHARS))


# --------------------------------------------------------------------------------------------------
# Config


@dataclass
class EmbeddedConfig:
    """Architecture, optimizer and output format of the embedded policy."""

    d_model: int = 64
    n_layer: int = 2
    n_head: int = 4
    max_context: int = 512
    """Positions the model knows (BOS + prompt + completion); the prompt is left-truncated to fit."""
    dropout: float = 0.0
    """Dropout in training steps only; keep 0 so an on-policy update sees ratio = 1."""
    lr: float = 3e-3
    weight_decay: float = 0.0
    seed: int = 0
    alphabet: str | None = None
    """Characters the completion may use (logits of every other token are masked); None = any printable."""
    length: int | None = None
    """Exactly this many completion tokens (no EOS); None = stop at EOS or max_new_tokens."""
    edit_channel: bool = False
    """The input that predicts completion token t also carries the prompt's character t. For
    problems whose answer is an edit of the state shown (LABS), copying is then one embedding away
    instead of an attention pattern the model must first discover; untrained, it is just noise."""
    write: Literal["text", "flips"] = "text"
    """What a completion is. "text": the answer, character by character. "flips": for a prompt of
    exactly `length` characters of a two-character `alphabet`, the positions to switch to the other
    character, in increasing order, then EOS (1 to `max_flips` of them); the answer (`Sample.text`)
    is the prompt with those positions switched. Each position is chosen by pointing at the
    prompt (a pointer logit per prompt character, from a prompt read in both directions) and EOS
    by the head. An answer then always differs from its state, costs a few tokens instead of
    `length`, and how many characters to change is a learned choice of its own."""
    max_flips: int = 8
    """The most positions a "flips" completion may name."""

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_head ({self.n_head})")
        if self.alphabet is not None:
            if not self.alphabet or len(set(self.alphabet)) != len(self.alphabet):
                raise ValueError(f"alphabet must be non-empty with distinct characters, got {self.alphabet!r}")
            outside = sorted(set(self.alphabet) - set(CHARS))
            if outside:
                raise ValueError(f"alphabet characters {outside!r} are not printable ASCII, which is all "
                                 f"the embedded policy can write")
        if self.length is not None and not 1 <= self.length <= self.max_context - 2:
            raise ValueError(f"length must be in [1, max_context - 2 = {self.max_context - 2}], got {self.length}")
        if self.write not in ("text", "flips"):
            raise ValueError(f"write must be 'text' or 'flips', got {self.write!r}")
        if self.write == "flips":
            if self.alphabet is None or len(self.alphabet) != 2 or self.length is None:
                raise ValueError(f"write='flips' needs a two-character alphabet and a fixed length, got alphabet="
                                 f"{self.alphabet!r}, length={self.length}")
            if not 1 <= self.max_flips <= self.length:
                raise ValueError(f"max_flips must be in [1, length = {self.length}], got {self.max_flips}")
            if 2 + self.length + self.max_flips > self.max_context:
                raise ValueError(f"BOS + {self.length} prompt characters + {self.max_flips + 1} flip tokens do not "
                                 f"fit max_context={self.max_context}")

    @classmethod
    def from_spec(cls, spec: Any, **overrides: Any) -> EmbeddedConfig:
        """The config for a problem's `EmbeddedSpec` (its alphabet and length), plus any overrides."""
        return cls(**{"alphabet": spec.alphabet, "length": spec.length,
                      "edit_channel": spec.answer_edits_prompt, **overrides})


# --------------------------------------------------------------------------------------------------
# Model: a pre-LN GPT with an optional KV cache for sampling.


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.out = nn.Linear(4 * d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None,
                cache: tuple[torch.Tensor, torch.Tensor] | None = None, start: int = 0) -> torch.Tensor:
        """`attn_mask` (B, 1, T, S) bool, True = may attend; None = plain causal. With `cache`
        (key and value buffers (B, H, S_max, hd)) this chunk's keys/values are written at `start`."""
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            cache[0][:, :, start:start + T] = k
            cache[1][:, :, start:start + T] = v
            k, v = cache[0][:, :, :start + T], cache[1][:, :, :start + T]
        p = self.dropout if self.training else 0.0
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))


class TinyGPT(nn.Module):
    def __init__(self, config: EmbeddedConfig):
        super().__init__()
        self.tok = nn.Embedding(VOCAB_SIZE, config.d_model)
        self.pos = nn.Embedding(config.max_context, config.d_model)
        self.edit = nn.Embedding(VOCAB_SIZE, config.d_model, padding_idx=PAD) if config.edit_channel else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config.d_model, config.n_head, config.dropout)
                                    for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, VOCAB_SIZE, bias=False)
        flips = config.write == "flips"
        self.query = nn.Linear(config.d_model, config.d_model, bias=False) if flips else None
        """Flip mode: the query a written position's logits point with at the prompt's characters."""
        self.pick = nn.Embedding(config.length + 1, config.d_model) if flips else None
        """Flip mode: the input embedding of a written position (row `length`: EOS or padding)."""

    def init_weights(self, generator: torch.Generator) -> None:
        """GPT-2 style: N(0, 0.02) weights, residual projections scaled by 1/sqrt(2 n_layer), zero biases."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() == 1:  # LayerNorm weights 1, biases 0
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
                elif name == "edit.weight":
                    p.normal_(0.0, 0.02, generator=generator)
                    p[PAD] = 0.0
                else:
                    residual = name.endswith(("proj.weight", "out.weight"))
                    p.normal_(0.0, 0.02 / math.sqrt(2 * len(self.blocks)) if residual else 0.02, generator=generator)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, attn_mask: torch.Tensor | None = None,
                caches: list[tuple[torch.Tensor, torch.Tensor]] | None = None, start: int = 0,
                edits: torch.Tensor | None = None) -> torch.Tensor:
        """`edits` (same shape as `ids`, PAD where none): the edit channel's prompt characters."""
        x = self.tok(ids) + self.pos(positions)
        if self.edit is not None and edits is not None:
            x = x + self.edit(edits)
        return self.head(self.hidden(x, attn_mask, caches, start))

    def hidden(self, x: torch.Tensor, attn_mask: torch.Tensor | None,
               caches: list[tuple[torch.Tensor, torch.Tensor]] | None = None, start: int = 0) -> torch.Tensor:
        """The final (layer-normed) hidden states of input embeddings `x`."""
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask, None if caches is None else caches[i], start)
        return self.ln_f(x)


# --------------------------------------------------------------------------------------------------
# Policy


class EmbeddedPolicy:
    """The `Policy` of the tiny embedded transformer (kind "embedded"); see the module docstring."""

    kind = "embedded"

    def __init__(self, config: EmbeddedConfig | None = None):
        self.config = config = config or EmbeddedConfig()
        self.generator = torch.Generator().manual_seed(config.seed)
        with torch.random.fork_rng(devices=[]):  # nn.Linear's default init must not move the global RNG
            self.model = TinyGPT(config)
        self.model.init_weights(self.generator)
        self.model.eval()
        self.reference = self._frozen_copy()
        self.optimizer = self._new_optimizer()
        self.temperature = 1.0
        allowed = torch.zeros(VOCAB_SIZE, dtype=torch.bool)
        allowed[encode(config.alphabet) if config.alphabet is not None else list(range(len(CHARS)))] = True
        allowed[EOS] = config.length is None
        self.allowed = allowed
        """Tokens the completion may use: the alphabet, plus EOS when the length is free."""

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=self.config.lr,
                                 weight_decay=self.config.weight_decay, betas=(0.9, 0.99))

    def _frozen_copy(self) -> TinyGPT:
        reference = copy.deepcopy(self.model).eval()
        reference.requires_grad_(False)
        return reference

    # ---- distributions

    def _log_dist(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """Log-probs of the masked, temperature-scaled distribution (masked tokens at -inf)."""
        logits = logits.masked_fill(~self.allowed, float("-inf"))
        return F.log_softmax(logits / temperature, dim=-1)

    def _prompt_ids(self, prompt: str, budget: int) -> list[int]:
        room = self.config.max_context - 1 - budget
        if room < 0:
            raise ValueError(f"a completion of {budget} tokens does not fit max_context="
                             f"{self.config.max_context} (BOS + prompt + completion); lower max_new_tokens "
                             f"or raise max_context")
        ids = encode(prompt)
        return [BOS] + (ids[len(ids) - room:] if len(ids) > room else ids)

    # ---- sampling

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], n: int, *, temperature: float, max_new_tokens: int) -> list[list[Sample]]:
        """`n` completions per prompt, drawn in one batch with a KV cache (left-padded prompts)."""
        if n < 1 or temperature < 0:
            raise ValueError(f"need n >= 1 and temperature >= 0, got n={n}, temperature={temperature}")
        if not prompts:
            return []
        budget = self.config.length if self.config.length is not None else max_new_tokens
        if budget < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature > 0:
            self.temperature = float(temperature)
        self.model.eval()
        if self.config.write == "flips":
            return self._sample_flips(prompts, n, temperature)

        prompt_ids = [self._prompt_ids(p, budget) for p in prompts]
        rows = [ids for ids in prompt_ids for _ in range(n)]
        B, P = len(rows), max(len(r) for r in rows)
        pad = torch.tensor([P - len(r) for r in rows])
        ids = torch.full((B, P), PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, P - len(r):] = torch.tensor(r)
        S = P + budget
        edits = self._edit_ids(rows, budget + 1)
        prefill_edits = torch.full((B, P), PAD, dtype=torch.long)
        prefill_edits[:, -1] = edits[:, 0]
        index = torch.arange(S)
        key_ok = index[None, :] >= pad[:, None]  # (B, S): False on left padding
        positions = (index[None, :] - pad[:, None]).clamp(min=0)
        cfg = self.config
        hd = cfg.d_model // cfg.n_head
        caches = [(torch.empty(B, cfg.n_head, S, hd), torch.empty(B, cfg.n_head, S, hd)) for _ in range(cfg.n_layer)]

        # Prefill: causal over the padded prompt; a padding query also sees itself (no empty softmax row).
        causal = torch.ones(P, P, dtype=torch.bool).tril()
        mask = causal[None] & (key_ok[:, None, :P] | torch.eye(P, dtype=torch.bool)[None])
        logits = self.model(ids, positions[:, :P], mask[:, None], caches, 0, prefill_edits)[:, -1]

        tokens = torch.full((B, budget), PAD, dtype=torch.long)
        logps = torch.zeros(B, budget)
        entropies = torch.zeros(B, budget)
        done = torch.zeros(B, dtype=torch.bool)
        lengths = torch.full((B,), budget, dtype=torch.long)
        for t in range(budget):
            if temperature > 0:
                logp = self._log_dist(logits, temperature)
                probs = logp.exp()
                token = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
                logps[:, t] = logp.gather(1, token[:, None]).squeeze(1)
                entropies[:, t] = -torch.where(self.allowed, probs * logp, 0.0).sum(-1)
            else:
                token = logits.masked_fill(~self.allowed, float("-inf")).argmax(-1)
            token = torch.where(done, PAD, token)
            tokens[:, t] = token
            ended = ~done & (token == EOS)
            lengths[ended] = t + 1
            done |= ended
            if bool(done.all()) or t == budget - 1:
                break
            at = P + t
            step_mask = key_ok[:, None, None, :at + 1]
            logits = self.model(token[:, None], positions[:, at:at + 1], step_mask, caches, at,
                                edits[:, t + 1:t + 2])[:, -1]

        out: list[list[Sample]] = []
        tokens_l, logps_np, ent_np = tokens.tolist(), logps.numpy(), entropies.numpy()
        for i, prompt in enumerate(prompts):
            group = []
            for j in range(i * n, (i + 1) * n):
                m = int(lengths[j])
                completion = tokens_l[j][:m]
                group.append(Sample(prompt=prompt, text=decode(completion), prompt_ids=list(rows[j]),
                                    completion_ids=completion, logprobs=logps_np[j, :m].copy(),
                                    entropy=ent_np[j, :m].copy(),
                                    finished=cfg.length is not None or bool(done[j])))
            out.append(group)
        return out

    # ---- teacher forcing

    def _edit_ids(self, prompt_rows: Sequence[Sequence[int]], count: int) -> torch.Tensor:
        """(B, count): prompt character t (after BOS) for the input that predicts completion token t;
        PAD past the prompt's end, and everywhere without the edit channel."""
        edits = torch.full((len(prompt_rows), count), PAD, dtype=torch.long)
        if self.config.edit_channel:
            for i, row in enumerate(prompt_rows):
                chars = list(row[1:count + 1])
                edits[i, :len(chars)] = torch.tensor(chars, dtype=torch.long)
        return edits

    def _batch(self, samples: Sequence[Sample]) -> tuple[torch.Tensor, ...]:
        """Right-padded inputs (B, L) with their edit channel, and for the completion tokens (B, T):
        their ids, the index of the logits that predict them, and a mask."""
        seqs = [list(s.prompt_ids) + list(s.completion_ids) for s in samples]
        L = max(len(s) for s in seqs)
        if L > self.config.max_context:
            raise ValueError(f"a sample of {L} tokens exceeds max_context={self.config.max_context}")
        T = max(1, max(len(s.completion_ids) for s in samples))
        ids = torch.full((len(seqs), L), PAD, dtype=torch.long)
        targets = torch.full((len(seqs), T), PAD, dtype=torch.long)
        where = torch.zeros((len(seqs), T), dtype=torch.long)
        mask = torch.zeros((len(seqs), T))
        edits = torch.full((len(seqs), L), PAD, dtype=torch.long)
        aligned = self._edit_ids([s.prompt_ids for s in samples], T)
        for i, (seq, s) in enumerate(zip(seqs, samples)):
            ids[i, :len(seq)] = torch.tensor(seq)
            c = len(s.completion_ids)
            if c:
                targets[i, :c] = torch.tensor(s.completion_ids)
                where[i, :c] = torch.arange(len(s.prompt_ids) - 1, len(s.prompt_ids) - 1 + c)
                mask[i, :c] = 1.0
                edits[i, len(s.prompt_ids) - 1:len(s.prompt_ids) - 1 + c] = aligned[i, :c]
        return ids, targets, where, mask, edits

    def _completion_logp(self, model: TinyGPT, ids: torch.Tensor, targets: torch.Tensor, where: torch.Tensor,
                         temperature: float, edits: torch.Tensor) -> torch.Tensor:
        """(B, T) log-probs of the completion tokens (padding entries are garbage; mask them)."""
        logits = model(ids, torch.arange(ids.shape[1])[None].expand_as(ids), edits=edits)
        logits = logits.gather(1, where[..., None].expand(-1, -1, logits.shape[-1]))
        logp = self._log_dist(logits, temperature).gather(2, targets.clamp(max=VOCAB_SIZE - 1)[..., None]).squeeze(2)
        return logp.masked_fill(targets == PAD, 0.0)

    def _token_logps(self, model: TinyGPT, samples: Sequence[Sample],
                     temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) log-probs of each sample's completion tokens under `model` (0 past its end), and
        the (B, T) mask of real tokens; in either write mode."""
        if self.config.write == "flips":
            return self._flip_token_logps(model, samples, temperature)
        ids, targets, where, mask, edits = self._batch(samples)
        return self._completion_logp(model, ids, targets, where, temperature, edits), mask

    @torch.no_grad()
    def logprobs(self, samples: Sequence[Sample], *, temperature: float | None = None) -> list[np.ndarray]:
        """Log-probs of each sample's completion under the current weights, at `temperature`
        (default: `self.temperature`, the latest sampling temperature)."""
        if not samples:
            return []
        self.model.eval()
        logp = self._token_logps(self.model, samples, temperature or self.temperature)[0].numpy()
        return [logp[i, :len(s.completion_ids)].copy() for i, s in enumerate(samples)]

    def update(self, items: Sequence[TrainItem], loss: LossConfig) -> dict[str, float]:
        """One AdamW step on the policy-gradient loss of `items` (gradients clipped to `max_grad_norm`)."""
        tokens = sum(len(it.sample.completion_ids) for it in items)
        if not items or tokens == 0:
            return {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "ratio_mean": 1.0, "ratio_max": 1.0,
                    "grad_norm": 0.0, "tokens": 0.0}
        samples = [it.sample for it in items]
        self.model.train()
        logp_new, mask = self._token_logps(self.model, samples, self.temperature)
        logp_sampled = torch.zeros_like(mask)
        for i, s in enumerate(samples):
            logp_sampled[i, :len(s.completion_ids)] = torch.as_tensor(np.asarray(s.logprobs, dtype=np.float32))
        advantages = torch.tensor([it.advantage for it in items], dtype=torch.float32)
        logp_ref = None
        if loss.kl_coef > 0:
            with torch.no_grad():
                logp_ref = self._token_logps(self.reference, samples, self.temperature)[0]
        value, stats = policy_gradient_loss(logp_new, logp_sampled, advantages, mask, loss, logp_ref)
        self.optimizer.zero_grad(set_to_none=True)
        value.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), loss.max_grad_norm)
        self.optimizer.step()
        self.model.eval()
        return {**stats, "grad_norm": float(grad_norm), "tokens": float(tokens)}

    def imitate(self, pairs: Sequence[tuple[str, str]], steps: int, batch_size: int = 64) -> float:
        """Supervised cross-entropy on (prompt, completion) pairs, to give the policy a prior.

        Uses the masked distribution at temperature 1 and its own AdamW (the RL optimizer stays
        fresh); with a free length the completion is followed by EOS. Afterwards the KL reference
        is this imitated policy (the prior RL starts from). Returns the loss of the last step.
        """
        if not pairs:
            raise ValueError("imitate needs at least one (prompt, completion) pair")
        samples = self._flip_samples(pairs) if self.config.write == "flips" else self._text_samples(pairs)
        optimizer = self._new_optimizer()
        self.model.train()
        value = float("nan")
        for _ in range(steps):
            pick = torch.randint(len(samples), (min(batch_size, len(samples)),), generator=self.generator).tolist()
            logp, mask = self._token_logps(self.model, [samples[i] for i in pick], 1.0)
            loss = -(logp * mask).sum() / mask.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            optimizer.step()
            value = float(loss.detach())
        self.model.eval()
        self.reference = self._frozen_copy()
        return value

    def _text_samples(self, pairs: Sequence[tuple[str, str]]) -> list[Sample]:
        """Imitation targets of the text mode: the completion's characters (then EOS if the length is free)."""
        budget_of = (lambda c: self.config.length) if self.config.length is not None else (lambda c: len(c) + 1)
        samples = []
        for prompt, completion in pairs:
            comp = encode(completion) + ([EOS] if self.config.length is None else [])
            if not bool(self.allowed[comp].all()):
                raise ValueError(f"completion {completion!r} uses characters outside the alphabet "
                                 f"{self.config.alphabet!r}")
            prompt_ids = self._prompt_ids(prompt, budget_of(completion))
            samples.append(Sample(prompt=prompt, text=completion, prompt_ids=prompt_ids, completion_ids=comp,
                                  logprobs=np.zeros(len(comp), dtype=np.float32)))
        return samples

    # ---- flip mode (write="flips"; see EmbeddedConfig.write)

    def _flip_prompt(self, prompt: str) -> list[int]:
        cfg = self.config
        assert cfg.alphabet is not None and cfg.length is not None
        if len(prompt) != cfg.length or not set(prompt) <= set(cfg.alphabet):
            raise ValueError(f"write='flips' edits a prompt of exactly {cfg.length} characters of {cfg.alphabet!r}; "
                             f"got {len(prompt)} characters: {prompt[:80]!r}")
        return encode(prompt)

    def _flip_log_dist(self, model: TinyGPT, prompts: torch.Tensor, written: torch.Tensor,
                       temperature: float) -> torch.Tensor:
        """(B, T + 1, length + 1) log-probs of the next flip token after each prefix of `written`.

        `prompts` (B, length) are character ids, `written` (B, T) the positions written so far
        (EOS or PAD after the end). Column p < length is "switch position p", column `length` is
        EOS. Positions must increase (one way to write a set), the first token is a position, and
        after `max_flips` positions only EOS is left.
        """
        n, cfg = prompts.shape[1], self.config
        batch, count = written.shape
        size = 1 + n + count
        assert model.pick is not None and model.query is not None
        x = torch.cat([model.tok(torch.cat([torch.full((batch, 1), BOS), prompts], 1)),
                       model.pick(written.clamp(max=n))], 1) + model.pos(torch.arange(size))
        index = torch.arange(size)
        in_prompt = index <= n
        mask = (index[None, :] <= index[:, None]) | (in_prompt[:, None] & in_prompt[None, :])
        hidden = model.hidden(x, mask[None, None])
        queries, keys = hidden[:, n:], hidden[:, 1:n + 1]
        pointer = torch.einsum("btd,bnd->btn", model.query(queries), keys) / math.sqrt(keys.shape[-1])
        logits = torch.cat([pointer, model.head(queries)[..., EOS:EOS + 1]], -1)
        positions = torch.where(written < n, written, -1)
        previous = torch.cat([torch.full((batch, 1), -1), positions.cummax(1).values], 1)
        step = torch.arange(count + 1)[None, :, None]
        allowed = torch.cat([(torch.arange(n)[None, None, :] > previous[..., None]) & (step < cfg.max_flips),
                             (step >= 1).expand(batch, -1, -1)], -1)
        return F.log_softmax(logits.masked_fill(~allowed, float("-inf")) / temperature, dim=-1)

    def _sample_flips(self, prompts: Sequence[str], n: int, temperature: float) -> list[list[Sample]]:
        cfg = self.config
        assert cfg.alphabet is not None and cfg.length is not None
        chars = [self._flip_prompt(p) for p in prompts]
        rows = torch.tensor([c for c in chars for _ in range(n)], dtype=torch.long)
        batch, length = rows.shape
        written = torch.zeros((batch, 0), dtype=torch.long)
        logps = torch.zeros(batch, cfg.max_flips + 1)
        entropies = torch.zeros(batch, cfg.max_flips + 1)
        done = torch.zeros(batch, dtype=torch.bool)
        for t in range(cfg.max_flips + 1):
            logp = self._flip_log_dist(self.model, rows, written, temperature if temperature > 0 else 1.0)[:, -1]
            if temperature > 0:
                probs = logp.exp()
                choice = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
                logps[:, t] = torch.where(done, 0.0, logp.gather(1, choice[:, None]).squeeze(1))
                entropies[:, t] = torch.where(done, 0.0, -torch.where(probs > 0, probs * logp, 0.0).sum(-1))
            else:
                choice = logp.argmax(-1)
            token = torch.where(done, PAD, torch.where(choice == length, EOS, choice))
            written = torch.cat([written, token[:, None]], 1)
            done |= token == EOS
            if bool(done.all()):
                break
        switch = {cfg.alphabet[0]: cfg.alphabet[1], cfg.alphabet[1]: cfg.alphabet[0]}
        out: list[list[Sample]] = []
        tokens_l = written.tolist()
        for i, prompt in enumerate(prompts):
            group = []
            for j in range(i * n, (i + 1) * n):
                completion = tokens_l[j][:tokens_l[j].index(EOS) + 1]
                text = list(prompt)
                for position in completion[:-1]:
                    text[position] = switch[text[position]]
                group.append(Sample(prompt=prompt, text="".join(text), prompt_ids=[BOS] + chars[i],
                                    completion_ids=completion, logprobs=logps[j, :len(completion)].numpy().copy(),
                                    entropy=entropies[j, :len(completion)].numpy().copy()))
            out.append(group)
        return out

    def _flip_token_logps(self, model: TinyGPT, samples: Sequence[Sample],
                          temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.config.length
        assert n is not None
        prompts = torch.tensor([list(s.prompt_ids[1:]) for s in samples], dtype=torch.long)
        count = max(1, max(len(s.completion_ids) for s in samples))
        written = torch.full((len(samples), count), PAD, dtype=torch.long)
        mask = torch.zeros(len(samples), count)
        for i, s in enumerate(samples):
            written[i, :len(s.completion_ids)] = torch.tensor(s.completion_ids, dtype=torch.long)
            mask[i, :len(s.completion_ids)] = 1.0
        log_dist = self._flip_log_dist(model, prompts, written[:, :-1], temperature)
        targets = torch.where(written == EOS, n, torch.where(written < n, written, 0))
        logp = log_dist.gather(2, targets[..., None]).squeeze(2)
        return logp.masked_fill(mask == 0, 0.0), mask

    def _flip_samples(self, pairs: Sequence[tuple[str, str]]) -> list[Sample]:
        """Imitation targets of the flip mode: the positions where the completion differs from the
        prompt, in increasing order, then EOS. Pairs that change nothing or more than `max_flips`
        characters cannot be written in this mode and are left out."""
        samples = []
        for prompt, completion in pairs:
            prompt_ids = self._flip_prompt(prompt)
            self._flip_prompt(completion)
            changed = [i for i, (a, b) in enumerate(zip(prompt, completion)) if a != b]
            if 1 <= len(changed) <= self.config.max_flips:
                samples.append(Sample(prompt=prompt, text=completion, prompt_ids=[BOS] + prompt_ids,
                                      completion_ids=changed + [EOS],
                                      logprobs=np.zeros(len(changed) + 1, dtype=np.float32)))
        if not samples:
            raise ValueError(f"no pair changes between 1 and max_flips = {self.config.max_flips} characters, which is "
                             f"all the flip mode can write")
        return samples

    # ---- checkpoints

    def save(self, directory: Path) -> None:
        """`policy.pt` (weights, reference, optimizer, RNG, temperature) and `policy.json` (the config)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "policy.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=2))
        state = {"model": self.model.state_dict(), "reference": self.reference.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                 "temperature": self.temperature}
        torch.save(state, directory / "policy.pt")

    def load(self, directory: Path) -> None:
        """Restore a checkpoint written by `save` by a policy of the same architecture."""
        directory = Path(directory)
        saved = EmbeddedConfig(**json.loads((directory / "policy.json").read_text()))
        shape = ("d_model", "n_layer", "n_head", "max_context", "alphabet", "length", "edit_channel", "write",
                 "max_flips")
        differ = [f"{k}: {getattr(saved, k)!r} != {getattr(self.config, k)!r}" for k in shape
                  if getattr(saved, k) != getattr(self.config, k)]
        if differ:
            raise ValueError(f"checkpoint {directory} was saved by a different embedded policy ({'; '.join(differ)}); "
                             f"use EmbeddedPolicy.from_checkpoint(directory)")
        state = torch.load(directory / "policy.pt", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.reference.load_state_dict(state["reference"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.temperature = float(state["temperature"])

    @classmethod
    def from_checkpoint(cls, directory: Path) -> EmbeddedPolicy:
        """A policy with the saved config and state."""
        policy = cls(EmbeddedConfig(**json.loads((Path(directory) / "policy.json").read_text())))
        policy.load(directory)
        return policy
