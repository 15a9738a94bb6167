"""A tiny random causal LM and its tokenizer, built in code and saved like a hub checkpoint.

For tests, examples and smoke runs of the `hf` (and vLLM) backend without downloading anything:

    path = build_tiny_causal_lm(Path("/tmp/tiny-lm"))
    policy = make_policy("hf", model=str(path))

The tokenizer is a byte-level BPE (every string encodes; ~300 tokens) trained on a few sentences,
with BOS/EOS/PAD and role markers, and a one-line chat template. The model is a Llama of random
weights (2 layers, hidden size 32 by default; pass `hidden_size=256` for a head size of 64, which
vLLM's attention kernels need).
"""

from __future__ import annotations

from pathlib import Path

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
