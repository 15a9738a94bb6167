"""A tiny random causal LM and its tokenizer, built in code and saved like a hub checkpoint.

For tests, examples and smoke runs of the `hf` (and vLLM) backend without downloading anything:

    path = build_tiny_causal_lm(Path("/tmp/tiny-lm"))
    policy = make_policy("hf", model=str(path))
    policy = make_policy("hf", model="tiny")      # the same, built in a temporary directory

`--model tiny` (`model="tiny"`) is a plumbing check: the whole trainer runs on any CPU in seconds,
and the random model writes noise, so it will not find anything. Its answers are capped at
`TINY_MAX_NEW_TOKENS` tokens, whatever the env's default length.

The tokenizer is a byte-level BPE (every string encodes; ~300 tokens) trained on a few sentences,
with BOS/EOS/PAD and role markers, and a one-line chat template. The model is a Llama of random
weights (2 layers, hidden size 32 by default; pass `hidden_size=256` for a head size of 64, which
vLLM's attention kernels need).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

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


def make_tiny_policy(**hf_kwargs: Any) -> Any:
    """An `HFPolicy` over the tiny random LM, built in a temporary directory that lives as long as
    the policy; the same `seed` rebuilds the same weights, so a checkpoint's adapter fits on resume."""
    from ttd_agent.policy.hf import HFPolicy

    class TinyPolicy(HFPolicy):
        """The tiny LM with its answers capped at TINY_MAX_NEW_TOKENS."""

        def sample(self, prompts: Any, n: int, *, temperature: float, max_new_tokens: int, on_sample: Any = None) -> Any:
            return super().sample(prompts, n, temperature=temperature,
                                  max_new_tokens=min(max_new_tokens, TINY_MAX_NEW_TOKENS), on_sample=on_sample)

    if hf_kwargs.get("sampler", "hf") != "hf":
        raise ValueError("--model tiny samples with the hf backend only; drop --sampler vllm")
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bars for a model of a few kB
    directory = tempfile.TemporaryDirectory(prefix="ttd-tiny-lm-")  # deleted with the policy
    try:
        path = build_tiny_causal_lm(Path(directory.name), seed=hf_kwargs.get("seed", 0))
        policy = TinyPolicy(**{**hf_kwargs, "model": str(path)})
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    policy.files = directory  # peft reads the base config when it saves an adapter
    return policy
