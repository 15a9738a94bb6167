"""Policy backends behind one interface (`base.Policy`): "embedded" (tiny, built in code) and "hf"
(transformers + peft LoRA, optionally sampling through vLLM).

    policy = make_policy("embedded", alphabet="+-", length=64)
    policy = make_policy("hf", model="Qwen/Qwen2.5-0.5B-Instruct", lora_rank=32)

Importing this package needs only numpy; torch is imported when a policy is made.
"""

from __future__ import annotations

from typing import Any

from ttd_agent.policy.base import LossConfig, Policy, Sample, TrainItem

__all__ = ["LossConfig", "Policy", "Sample", "TrainItem", "make_policy"]

KINDS = ("embedded", "hf")


def make_policy(kind: str, **kwargs: Any) -> Policy:
    """A policy of `kind`: "embedded" (kwargs: `EmbeddedConfig` fields, or `config=`) or "hf"
    (kwargs: `HFPolicy` arguments, `model` first)."""
    if kind not in KINDS:
        raise ValueError(f"unknown policy kind {kind!r}; expected one of {', '.join(KINDS)}")
    try:
        import torch  # noqa: F401
    except ImportError as error:
        raise ImportError(f"the {kind!r} policy needs torch, which is missing: pip install 'ttd[agent]'") from error
    if kind == "embedded":
        from ttd_agent.policy.embedded import EmbeddedConfig, EmbeddedPolicy

        config = kwargs.pop("config", None)
        if config is not None and kwargs:
            raise ValueError(f"pass either config= or EmbeddedConfig fields, not both (got {sorted(kwargs)})")
        return EmbeddedPolicy(config or EmbeddedConfig(**kwargs))
    try:
        import peft  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        raise ImportError(f"the 'hf' policy needs transformers and peft ({error.name} is missing): "
                          f"pip install 'ttd[agent]'") from error
    from ttd_agent.policy.hf import HFPolicy

    return HFPolicy(**kwargs)
