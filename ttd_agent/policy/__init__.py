"""Policy backends behind one interface (`base.Policy`): "embedded" (tiny, built in code) and "hf"
(transformers + peft LoRA, optionally sampling through vLLM).

    policy = make_policy("embedded", alphabet="+-", length=64)
    policy = make_policy("hf", model="Qwen/Qwen2.5-0.5B-Instruct", lora_rank=32)
    policy = make_policy("hf", model="tiny")   # random tiny LM built in code: a plumbing check

Importing this package needs only numpy; torch is imported when a policy is made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ttd_agent.policy.base import LossConfig, Policy, Sample, TrainItem

__all__ = ["LossConfig", "Policy", "Sample", "TrainItem", "make_policy"]

KINDS = ("embedded", "hf")


def make_policy(kind: str, **kwargs: Any) -> Policy:
    """A policy of `kind`: "embedded" (kwargs: `EmbeddedConfig` fields, or `config=`) or "hf"
    (kwargs: `HFPolicy` arguments, `model` first)."""
    if kind not in KINDS:
        raise ValueError(f"unknown policy kind {kind!r}; expected one of {', '.join(KINDS)}")
    model = str(kwargs.get("model"))
    if kind == "hf" and _looks_like_path(model) and not Path(model).expanduser().exists():
        raise FileNotFoundError(f"model directory {model} does not exist: pass the directory that holds the "
                                f"model's config.json, a hub id such as Qwen/Qwen2.5-Coder-1.5B-Instruct, or 'tiny'")
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
    from ttd_agent.policy.tiny import TINY, make_tiny_policy

    if model == TINY:
        return make_tiny_policy(**kwargs)
    check_hub_model(model)
    try:
        return HFPolicy(**kwargs)
    except OSError as error:  # missing path, unknown hub id, no internet: transformers says which
        raise ValueError(f"cannot load model {kwargs.get('model')!r}: {_first_line(error)}; pass a local directory "
                         f"with config.json and tokenizer files, a hub id already in the Hugging Face cache "
                         f"(or reachable online), or 'tiny' for a CPU plumbing check") from error


def check_hub_model(model: str) -> None:
    """Fail at once, in one line, when a hub id can be neither read from the cache nor downloaded
    (offline, no network, a typo): otherwise huggingface_hub retries for about a minute first.
    A cached model on a machine without network is loaded from the cache, offline."""
    from ttd_agent.policy.tiny import TINY

    if model == TINY or _looks_like_path(model) or Path(model).expanduser().exists():  # make_policy names a missing path
        return
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    advice = "pass a local directory with config.json and tokenizer files, or 'tiny' for a CPU plumbing check"
    try:
        cached = isinstance(huggingface_hub.try_to_load_from_cache(model, "config.json"), str)
    except HFValidationError as error:
        raise ValueError(f"--model {model!r} is neither a directory nor a hub id ({_first_line(error)}); "
                         f"{advice}") from error
    if constants.HF_HUB_OFFLINE:
        if cached:
            return
        raise ValueError(f"--model {model}: not in the Hugging Face cache and HF_HUB_OFFLINE is set; {advice}")
    try:
        huggingface_hub.model_info(model, timeout=10)
    except RepositoryNotFoundError as error:
        raise ValueError(f"--model {model}: no such model on the Hugging Face hub (a typo? a private repo needs "
                         f"`hf auth login`); {advice}") from error
    except GatedRepoError as error:
        raise ValueError(f"--model {model} is gated: accept its licence on huggingface.co and run "
                         f"`hf auth login`; or {advice}") from error
    except Exception as error:  # noqa: BLE001 - no network, a proxy, a timeout: the hub cannot be reached
        if not cached:
            raise ValueError(f"--model {model}: not in the Hugging Face cache and {constants.ENDPOINT} cannot be "
                             f"reached ({_first_line(error)}); download it where there is network, or {advice}"
                             ) from error
        constants.HF_HUB_OFFLINE = True  # read the cache without retrying the hub for every file
        os.environ["HF_HUB_OFFLINE"] = "1"


def _looks_like_path(model: str) -> bool:
    """A hub id is "org/name"; anything absolute, relative-dotted, home-based or deeper is a path."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else type(error).__name__
