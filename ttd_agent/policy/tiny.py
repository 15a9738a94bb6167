"""A tiny random causal LM and its tokenizer, built in code and saved like a hub checkpoint.

For tests, examples and smoke runs of the `hf` (and vLLM) backend without downloading anything:

    path = build_tiny_causal_lm(Path("/tmp/tiny-lm"))
    policy = make_policy("hf", model=str(path))
    policy = make_policy("hf", model="tiny")      # the same, built in a temporary directory

`--model tiny` (`model="tiny"`) is a plumbing check: the whole trainer runs on any CPU in seconds,
and will not find anything. Its answers are capped at `TINY_MAX_NEW_TOKENS` tokens, whatever the
env's default length. Random weights write noise, which a program problem rejects before its
sandbox or `check()` run; so where the problem has an `example_answer()` (a ```python block for
`PythonProgramProblem`) the model is first taught to write it after the problem's prompts
(`teach_answer`, a few seconds), and its samples, the example and variations of it, reach the
sandbox and the checker.

The tokenizer is a byte-level BPE (every string encodes; ~300 tokens) trained on a few sentences,
with BOS/EOS/PAD and role markers, and a one-line chat template. The model is a Llama of random
weights (2 layers, hidden size 32 by default; pass `hidden_size=256` for a head size of 64, which
vLLM's attention kernels need).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TINY = "tiny"
"""The `--model` value that selects this model."""
TINY_MAX_NEW_TOKENS = 64
"""Answer length cap of the tiny model: noise gains nothing from being long."""

CORPUS = [
    "def solve(x):\n    return [i * i for i in range(x)]\n",
    "The answer is \\boxed{42}. Let me think step by step about the construction.",
    "import numpy as np\nvalues = np.zeros(10)\nprint(values.sum())\n",
    "++--+-+--++-+--+ 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "Improve the state: reward 0.5, parent 0.25. Write a program in a ```python block.",
]
SPECIALS = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tiny_causal_lm(directory: Path, seed: int = 0, *, hidden_size: int = 32, num_hidden_layers: int = 2,
                         num_attention_heads: int = 4, num_key_value_heads: int = 2, intermediate_size: int = 64,
                         vocab_size: int = 320, max_position_embeddings: int = 1024) -> Path:
    """Write a random `LlamaForCausalLM` and a matching fast tokenizer to `directory`; returns it.

    Deterministic in `seed` (the global torch RNG is left as it was).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        additional_special_tokens=SPECIALS[3:])
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)

    config = LlamaConfig(hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, vocab_size=len(tokenizer),
                         max_position_embeddings=max_position_embeddings, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    return directory


TEACH_STEPS = 150
TEACH_LR = 1e-2
"""Imitation of the answer format: AdamW steps and learning rate (the loss ends near 0.01)."""


def teach_answer(policy: Any, prompts: Sequence[str], answer: str) -> float:
    """Cross-entropy on `answer` (then EOS) after each of `prompts` as the policy renders them, in
    the base weights (the KL reference and what a resume rebuilds), so the random model writes the
    problem's answer format; returns the last loss. Deterministic in the policy's seed."""
    import copy

    import torch

    target = list(policy.tokenizer(answer, add_special_tokens=False)["input_ids"]) + [policy.eos_ids[0]]
    rows = [(policy.render(prompt), target) for prompt in prompts]
    width = max(len(ids) + len(t) for ids, t in rows)
    pad = policy.pad_id
    ids = torch.tensor([[pad] * (width - len(i) - len(t)) + i + t for i, t in rows], device=policy.device)
    labels = torch.tensor([[-100] * (width - len(t)) + t for _, t in rows], device=policy.device)
    attention = (ids != pad).long() if pad not in target else torch.ones_like(ids)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    base = policy._causal_lm(policy.model)
    weights = [p for name, p in base.named_parameters() if "lora_" not in name]
    for p in weights:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(weights, lr=TEACH_LR)
    context = policy.model.disable_adapter() if policy.lora else contextlib.nullcontext()
    loss = torch.tensor(float("nan"))
    checkpointing = getattr(base, "is_gradient_checkpointing", False)  # saves nothing here, costs time
    base.gradient_checkpointing_disable()
    with context, torch.random.fork_rng(devices=[]):
        torch.manual_seed(policy.seed)
        base.train()
        for _ in range(TEACH_STEPS):
            loss = base(input_ids=ids, attention_mask=attention, position_ids=positions, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy.model.eval()
    for p in weights:
        p.requires_grad_(not policy.lora)
    if not policy.lora:  # full fine-tuning keeps its own copy as the reference
        policy.reference = copy.deepcopy(policy.model).eval().requires_grad_(False)
    return float(loss.detach())


def answer_to_teach(problem: Any, prompts: int = 4) -> tuple[list[str], str] | None:
    """(prompts of a few initial states, the problem's `example_answer()`), or None without one."""
    import numpy as np

    example = getattr(problem, "example_answer", None)
    if not callable(example):
        return None
    rng = np.random.default_rng(0)
    return list(dict.fromkeys(problem.prompt(problem.initial_state(rng)) for _ in range(prompts))), example()


def make_tiny_policy(answer: tuple[Sequence[str], str] | None = None, **hf_kwargs: Any) -> Any:
    """An `HFPolicy` over the tiny LM (taught `answer` = (prompts, text) when given; see
    `answer_to_teach`), built in a temporary directory that lives as long as the policy; the same
    `seed` and `answer` rebuild the same weights, so a checkpoint's adapter fits on resume."""
    from ttd_agent.policy.hf import HFPolicy

    class TinyPolicy(HFPolicy):
        """The tiny LM with its answers capped at TINY_MAX_NEW_TOKENS (or the taught answer's length
        and some room to vary)."""

        cap = TINY_MAX_NEW_TOKENS

        def sample(self, prompts: Any, n: int, *, temperature: float, max_new_tokens: int, on_sample: Any = None) -> Any:
            return super().sample(prompts, n, temperature=temperature,
                                  max_new_tokens=min(max_new_tokens, self.cap), on_sample=on_sample)

    if hf_kwargs.get("sampler", "hf") != "hf":
        raise ValueError("--model tiny samples with the hf backend only; drop --sampler vllm")
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bars for a model of a few kB
    directory = tempfile.TemporaryDirectory(prefix="ttd-tiny-lm-")  # deleted with the policy
    try:
        path = build_tiny_causal_lm(Path(directory.name), seed=hf_kwargs.get("seed", 0))
        policy = TinyPolicy(**{**hf_kwargs, "model": str(path)})
        if answer is not None:
            loss = teach_answer(policy, *answer)
            log.info("--model tiny taught the answer format in %d steps (loss %.3g)", TEACH_STEPS, loss)
            policy.cap = max(TINY_MAX_NEW_TOKENS, len(policy.tokenizer(answer[1])["input_ids"]) + 16)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    policy.files = directory  # peft reads the base config when it saves an adapter
    return policy
