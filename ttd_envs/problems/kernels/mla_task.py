"""MLA decode, sandbox side: seeded config, weights, input and KV cache, the bf16 reference.

One decode step of DeepSeek-V3's multi-head latent attention, everything in bf16:

    c_q = x W_dq^T;  c_kv = x W_dkv^T, appended to the cache at row `prefill` (L = prefill + 1 rows)
    q = c_q W_uq^T per head = [q_nope | q_rope], q_rope rotated at position `prefill`
    per cached row t: latent[:r] W_ukv^T per head = [k_nope | v]; latent[r:] is the shared rope key,
    rotated at position t (the cache stores it unrotated)
    score = (q_nope·k_nope + q_rope·k_rope) / sqrt(d_nope + d_rope); softmax over t; o = Σ attn·v
    y = concat_heads(o) W_o^T  → [B, 1, dim]; the returned cache is the whole buffer, new row included
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

RTOL, ATOL = 2e-2, 8e-3
COMPARE_DTYPE = "bfloat16"
OUTPUT_NAMES = ("the output y", "the returned kv cache")
ROPE_BASE = 10000.0
WEIGHTS = ("Q_proj_down", "KV_proj_down", "Q_proj_up", "KV_proj_up", "wo")


@dataclass
class Config:
    """Sizes and the five bf16 weights ([out, in] layout), as custom_kernel receives them."""

    batch_size: int
    dim: int
    n_heads: int
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    seq_len: int
    max_seq_len: int
    Q_proj_down: torch.Tensor
    KV_proj_down: torch.Tensor
    Q_proj_up: torch.Tensor
    KV_proj_up: torch.Tensor
    wo: torch.Tensor


class KVCache:
    """The latent cache: `data` [batch, max_seq_len, kv_lora_rank + rope dim] and `seq_len`, the
    number of filled rows. Calling it with c_kv [batch, s, ...] writes s rows at `seq_len`, advances
    it, and returns (the filled rows, the new seq_len)."""

    def __init__(self, data: torch.Tensor, seq_len: int) -> None:
        self.data = data
        self.seq_len = seq_len

    def __call__(self, c_kv: torch.Tensor) -> tuple[torch.Tensor, int]:
        rows = c_kv.shape[1]
        if self.seq_len + rows > self.data.shape[1]:
            raise ValueError(f"the cache holds {self.data.shape[1]} rows; cannot append {rows} at {self.seq_len}")
        self.data[:, self.seq_len:self.seq_len + rows] = c_kv
        self.seq_len += rows
        return self.data[:, :self.seq_len], self.seq_len


def generate(spec: dict[str, Any], seed: int, device: str) -> dict[str, Any]:
    """Weights N(0, 1)/sqrt(fan_in), x ~ N(0, 1), the first `prefill` cache rows ~ N(0, 1); all bf16."""
    gen = torch.Generator(device=device).manual_seed(seed)
    b, dim, heads = spec["batch_size"], spec["dim"], spec["n_heads"]
    dq, dkv, dn, dr, dv = (spec[k] for k in ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                                              "qk_rope_head_dim", "v_head_dim"))

    def normal(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(shape, generator=gen, device=device) * scale).to(torch.bfloat16)

    shapes = {"Q_proj_down": (dq, dim), "KV_proj_down": (dkv + dr, dim), "Q_proj_up": (heads * (dn + dr), dq),
              "KV_proj_up": (heads * (dn + dv), dkv), "wo": (dim, heads * dv)}
    weights = {name: normal(*shape, scale=1 / math.sqrt(shape[1])) for name, shape in shapes.items()}
    sizes = {k: spec[k] for k in ("batch_size", "dim", "n_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                                  "qk_rope_head_dim", "v_head_dim", "max_seq_len")}
    config = Config(seq_len=1, **sizes, **weights)
    x = normal(b, 1, dim)
    cache = torch.zeros((b, spec["max_seq_len"], dkv + dr), device=device, dtype=torch.bfloat16)
    cache[:, :spec["prefill"]] = normal(b, spec["prefill"], dkv + dr)
    return {"config": config, "x": x, "cache": cache, "prefill": spec["prefill"]}


def program_data(inputs: dict[str, Any]) -> tuple[Any, ...]:
    """What custom_kernel receives: (config, x, kv_cache), all clones of the harness's copies."""
    config = replace(inputs["config"], **{name: getattr(inputs["config"], name).clone() for name in WEIGHTS})
    return config, inputs["x"].clone(), KVCache(inputs["cache"].clone(), inputs["prefill"])


def modified_inputs(inputs: dict[str, Any], data: tuple[Any, ...]) -> list[str]:
    """Names of the inputs custom_kernel changed in place (the cache is meant to change)."""
    config, x, _ = data
    names = ["x"] if not torch.equal(inputs["x"], x) else []
    return names + [f"config.{n}" for n in WEIGHTS if not torch.equal(getattr(inputs["config"], n), getattr(config, n))]


def output_nbytes(inputs: dict[str, Any]) -> list[int]:
    return [inputs["x"].numel() * 2, inputs["cache"].numel() * 2]


def outputs(result: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """custom_kernel must return (y [B, 1, dim], the whole cache buffer) as tensors."""
    if not (isinstance(result, (tuple, list)) and len(result) == 2
            and all(isinstance(t, torch.Tensor) for t in result)):
        raise ValueError("custom_kernel must return a tuple (y, kv_cache.data) of two tensors, "
                         f"got {type(result).__name__}")
    for name, got, want in zip(("y", "kv cache"), result, (inputs["x"], inputs["cache"])):
        if tuple(got.shape) != tuple(want.shape) or got.device != want.device:
            raise ValueError(f"custom_kernel returned {name} of shape {tuple(got.shape)} on {got.device}, "
                             f"expected {tuple(want.shape)} on {want.device}")
    return tuple(result)


def rotate(t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on the last axis. Frequencies, angles and cos/sin are bf16, as in the
    leaderboard's reference: large positions share angles (6140..6144 all become 6144)."""
    half = t.shape[-1] // 2
    freqs = (ROPE_BASE ** (-torch.arange(half, device=t.device, dtype=torch.float32) / half)).to(torch.bfloat16)
    angles = positions.to(torch.bfloat16)[:, None] * freqs[None, :]
    cos = torch.cat([angles.float().cos()] * 2, -1).to(torch.bfloat16)
    sin = torch.cat([angles.float().sin()] * 2, -1).to(torch.bfloat16)
    turned = torch.cat([-t[..., half:], t[..., :half]], -1)
    return t * cos + turned * sin


def reference(inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The naive decode step: materialise K and V for every cached row, attend, project out."""
    cfg, x, prefill = inputs["config"], inputs["x"], inputs["prefill"]
    cache = KVCache(inputs["cache"].clone(), prefill)
    b, heads = x.shape[0], cfg.n_heads
    dkv, dn, dr, dv = cfg.kv_lora_rank, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
    q = F.linear(F.linear(x, cfg.Q_proj_down), cfg.Q_proj_up).view(b, 1, heads, dn + dr)
    rows, length = cache(F.linear(x, cfg.KV_proj_down))
    q_nope, q_rope = q.split([dn, dr], dim=-1)
    latent, k_rope = rows.split([dkv, dr], dim=-1)
    k_nope, v = F.linear(latent, cfg.KV_proj_up).view(b, length, heads, dn + dv).split([dn, dv], dim=-1)
    q_rope = rotate(q_rope, torch.tensor([prefill], device=x.device))
    k_rope = rotate(k_rope, torch.arange(length, device=x.device))
    scores = (torch.einsum("bqhd,bthd->bhqt", q_nope, k_nope)
              + torch.einsum("bqhd,btd->bhqt", q_rope, k_rope)) / math.sqrt(dn + dr)
    attention = torch.softmax(scores.float(), dim=-1).to(torch.bfloat16)
    o = torch.einsum("bhqt,bthd->bqhd", attention, v).reshape(b, 1, heads * dv)
    return F.linear(o, cfg.wo), cache.data
