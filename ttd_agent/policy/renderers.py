"""How a prompt becomes tokens and a completion becomes an answer, per model family.

Families (`renderer="auto"` picks one from the tokenizer):
- "plain": no chat template; the prompt is tokenized as is. The answer is the whole completion.
- "chat": the tokenizer's chat template, one user turn. The answer is the whole completion.
- "qwen3": the chat template with `enable_thinking`; the model thinks inside `<think>...</think>`
  and the answer is what follows the last `</think>` (nothing while the thinking is unfinished).
- "gpt-oss": the harmony format with `reasoning_effort`; the model writes an `analysis` channel,
  then a `final` one. The answer is the last `final` message only: the analysis often holds
  drafts of code, and the env takes the *last* code block of what it is given.

Every template renders with a fixed date (`strftime_now` and `date_string`, which gpt-oss and
Llama 3 templates stamp into the system message), so a resumed run renders the same tokens.
(The one private transformers function used, `_compile_jinja_template`, is the compiled template
`apply_chat_template` renders; with a version that lacks it we fall back and log a warning.)

Two-phase completion (`complete`). With a thinking budget, a completion that is still thinking
when the budget runs out gets the family's "answer now" text appended (for qwen3: a sentence
and `</think>`; for gpt-oss: a sentence, then a switch to the final channel) and continues for
`answer_budget` more tokens. The appended tokens are the trainer's, not the model's: they carry
loss mask 0 and log-prob 0, so the update neither rewards nor punishes them.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FAMILIES = ("plain", "chat", "qwen3", "gpt-oss")
ANSWER_NOW = "I am out of thinking time, so I will give my final answer now."


@dataclass
class Completion:
    """What a sampling engine returns for one row: token ids, their sampled log-probs, and
    whether it stopped on its own (False: cut by the token limit)."""

    ids: list[int]
    logprobs: np.ndarray
    finished: bool
    entropy: np.ndarray | None = None
    loss_mask: np.ndarray | None = None
    """0 on tokens the trainer forced (two-phase completion), 1 elsewhere; None means all 1."""
    error: str | None = None
    """Why the engine has no completion for this row (see `Sample.error`)."""

    @classmethod
    def failed(cls, error: str) -> Completion:
        return cls(ids=[], logprobs=np.zeros(0, dtype=np.float32), finished=False, error=error)


OnRow = Callable[[int, Completion], None]
"""Hears (row index, its Completion) as soon as that row is complete."""
Generate = Callable[[list[list[int]], float, int, list[int], OnRow], None]
"""(rows of token ids, temperature, max new tokens, one seed per row, on_row): a sampling engine
that reports each row's Completion through `on_row` (in any order, possibly from other threads)."""


def detect_family(tokenizer: Any) -> str:
    """The family a tokenizer belongs to, read from its special tokens and template."""
    vocab = tokenizer.get_vocab()
    if "<|channel|>" in vocab and "<|message|>" in vocab:
        return "gpt-oss"
    if "<think>" in vocab and "</think>" in vocab and getattr(tokenizer, "chat_template", None):
        return "qwen3"
    return "chat" if getattr(tokenizer, "chat_template", None) else "plain"


class Renderer:
    """Prompt → token ids, completion ids → answer, stop tokens and the forced "answer now" ids."""

    def __init__(self, tokenizer: Any, family: str = "auto", *, thinking: bool = True,
                 reasoning_effort: str = "medium", date: str = "2026-01-01", system_prompt: str | None = None):
        self.tokenizer = tokenizer
        self.family = detect_family(tokenizer) if family == "auto" else family
        if self.family not in FAMILIES:
            raise ValueError(f"unknown renderer {family!r}; expected auto or one of {', '.join(FAMILIES)}")
        if self.family != "plain" and not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"renderer {self.family!r} needs a tokenizer with a chat template; this one has none "
                             f"(use renderer 'plain')")
        self.system_prompt = system_prompt
        day = datetime.datetime.strptime(date, "%Y-%m-%d")
        self.template_kwargs: dict[str, Any] = {"date_string": day.strftime("%d %b %Y")}
        self._strftime_now = day.strftime
        if self.family == "qwen3":
            self.template_kwargs["enable_thinking"] = thinking
        if self.family == "gpt-oss":
            self.template_kwargs["reasoning_effort"] = reasoning_effort
        vocab = tokenizer.get_vocab()
        stops = {"qwen3": ["<|im_end|>", "<|endoftext|>"], "gpt-oss": ["<|return|>", "<|call|>"]}.get(self.family, [])
        self.stop_ids = sorted({vocab[t] for t in stops if t in vocab}
                               | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()))
        forced = {"qwen3": f"\n\n{ANSWER_NOW}\n</think>\n\n",
                  "gpt-oss": f" {ANSWER_NOW}<|end|><|start|>assistant<|channel|>final<|message|>"}.get(self.family)
        self.forced_ids = list(tokenizer(forced, add_special_tokens=False)["input_ids"]) if forced else []
        self.opened = ""
        """Text the generation prompt leaves open for the completion: "<think>" when the template
        itself starts the thinking (Qwen3 thinking variants, R1-style templates)."""
        if self.family == "qwen3":
            probe = self.render_chat([{"role": "user", "content": "x"}])
            tail = probe.rsplit("<think>", 1)
            self.opened = "<think>" if len(tail) == 2 and "</think>" not in tail[1] else ""

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of one user turn (after the system prompt, if any), ready for the reply."""
        tok = self.tokenizer
        if self.family == "plain":
            text = prompt if self.system_prompt is None else f"{self.system_prompt}\n\n{prompt}"
            return list(tok(text, add_special_tokens=True)["input_ids"])
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
        messages.append({"role": "user", "content": prompt})
        return list(tok(self.render_chat(messages), add_special_tokens=False)["input_ids"])

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The chat template's text for `messages` and the assistant's turn, on the fixed date.

        transformers' `apply_chat_template` gives templates its own `strftime_now` (today) and
        refuses a callable in its keyword arguments, so we render its compiled template ourselves
        with the same variables and a `strftime_now` that reads the fixed date."""
        tok = self.tokenizer
        template = tok.chat_template
        if isinstance(template, dict):
            template = template.get("default") or next(iter(template.values()))
        try:
            from transformers.utils.chat_template_utils import _compile_jinja_template
        except ImportError:  # a transformers without it: today's date may leak into the prompt
            log.warning("cannot fix the chat template's date with this transformers version")
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                           **self.template_kwargs)
        variables = {k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)}
        return _compile_jinja_template(template).render(
            messages=messages, tools=None, documents=None, add_generation_prompt=True,
            strftime_now=self._strftime_now, **variables, **self.template_kwargs)

    def _decode(self, ids: Sequence[int], keep_special: bool) -> str:
        ids = list(ids)
        if ids and ids[-1] in self.stop_ids:
            ids = ids[:-1]
        return self.tokenizer.decode(ids, skip_special_tokens=not keep_special)

    def answer(self, completion_ids: Sequence[int]) -> str:
        """What the env receives: the final answer only (see the module docstring)."""
        if self.family == "gpt-oss":
            text = self._decode(completion_ids, keep_special=True)
            marker = "<|channel|>final<|message|>"
            if marker not in text:
                return ""
            final = text.rsplit(marker, 1)[1]
            for end in ("<|end|>", "<|return|>", "<|start|>"):
                final = final.split(end, 1)[0]
            return final
        if self.family == "qwen3":  # think tags may be special tokens: decode them, strip the rest
            text = self.opened + self._decode(completion_ids, keep_special=True)
            if "</think>" in text:
                text = text.rsplit("</think>", 1)[1].lstrip("\n")
            elif "<think>" in text:
                return ""
            for token in self.tokenizer.all_special_tokens:
                text = text.replace(token, "")
            return text
        return self._decode(completion_ids, keep_special=False)

    def still_thinking(self, completion_ids: Sequence[int]) -> bool:
        """True when a cut completion never reached its answer (the two-phase trigger)."""
        if self.family == "gpt-oss":
            return "<|channel|>final<|message|>" not in self._decode(completion_ids, keep_special=True)
        if self.family == "qwen3":
            text = self.opened + self._decode(completion_ids, keep_special=True)
            return "<think>" in text and "</think>" not in text.rsplit("<think>", 1)[1]
        return False


def sample_seeds(seed: int, call: int, rows: int, phase: int = 0) -> list[int]:
    """One 31-bit sampling seed per row, distinct across rows, calls and phases, from (seed, call)."""
    state = np.random.SeedSequence([seed, call, phase]).generate_state(rows, dtype=np.uint64)
    return [int(s % (2**31 - 1)) for s in state]


def _merge(head: Completion, forced: list[int], tail: Completion) -> Completion:
    """Phase one, the forced tokens (log-prob 0, loss mask 0) and phase two, as one completion
    (a failed phase two fails the whole: half a completion is no answer)."""
    if tail.error is not None:
        return tail
    zeros = np.zeros(len(forced), dtype=np.float32)
    entropy = None
    if head.entropy is not None and tail.entropy is not None:
        entropy = np.concatenate([head.entropy, zeros, tail.entropy]).astype(np.float32)
    head_mask = head.loss_mask if head.loss_mask is not None else np.ones(len(head.ids), dtype=np.float32)
    tail_mask = tail.loss_mask if tail.loss_mask is not None else np.ones(len(tail.ids), dtype=np.float32)
    return Completion(ids=head.ids + forced + tail.ids,
                      logprobs=np.concatenate([head.logprobs, zeros, tail.logprobs]).astype(np.float32),
                      finished=tail.finished, entropy=entropy,
                      loss_mask=np.concatenate([head_mask, zeros, tail_mask]).astype(np.float32))


def complete(generate: Generate, renderer: Renderer, rows: list[list[int]], *, temperature: float,
             max_new_tokens: int, seeds: list[int], on_row: OnRow, thinking_budget: int | None = None,
             answer_budget: int = 2048, seeds_phase2: list[int] | None = None) -> None:
    """One completion per row, reported through `on_row` as each is done; with `thinking_budget`,
    the two-phase completion of the module docstring (phase one gets `thinking_budget` tokens
    instead of `max_new_tokens`; rows that answered in time are reported before phase two)."""
    if thinking_budget is None or not renderer.forced_ids:
        if thinking_budget is not None:
            log.warning("thinking_budget is ignored: renderer %r has no thinking phase", renderer.family)
        generate(rows, temperature, max_new_tokens, seeds, on_row)
        return
    heads: dict[int, Completion] = {}

    def first(k: int, c: Completion) -> None:
        if c.error is None and not c.finished and renderer.still_thinking(c.ids):
            heads[k] = c
        else:
            on_row(k, c)

    generate(rows, temperature, thinking_budget, seeds, first)
    if not heads:
        return
    cut = sorted(heads)
    forced = renderer.forced_ids
    later = seeds_phase2 if seeds_phase2 is not None else sample_seeds(seeds[0], len(rows), len(rows), phase=1)
    generate([rows[k] + heads[k].ids + forced for k in cut], temperature, answer_budget, [later[k] for k in cut],
             lambda m, tail: on_row(cut[m], _merge(heads[cut[m]], forced, tail)))
