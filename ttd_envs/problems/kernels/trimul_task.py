"""TriMul, sandbox side: seeded inputs and weights, the fp32 reference, what the program gets.

The operation (outgoing Triangle Multiplicative Update, AlphaFold3, forward only), with x of
shape [B, N, N, C], mask m of shape [B, N, N] and hidden size H:

    x̂ = LayerNorm_C(x)                                   (affine, eps 1e-5)
    L = (x̂ W_lp^T) ⊙ m ⊙ σ(x̂ W_lg^T),  R = (x̂ W_rp^T) ⊙ m ⊙ σ(x̂ W_rg^T)
    O[b, i, j, h] = Σ_k L[b, i, k, h] · R[b, j, k, h]
    Y = (LayerNorm_H(O) ⊙ σ(x̂ W_og^T)) W_out^T           → [B, N, N, C], fp32
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

RTOL = ATOL = 2e-2
COMPARE_DTYPE = "float32"
OUTPUT_NAMES = ("the output",)
EPS = 1e-5
PROJECTIONS = ("left_proj", "right_proj", "left_gate", "right_gate", "out_gate")


def generate(spec: dict[str, Any], seed: int, device: str) -> dict[str, Any]:
    """Input, mask and all ten weights from one generator seeded with `seed`.

    spec keys: batch, seqlen, dim, hidden, masked (random 0/1 int64 mask; else all-ones fp32),
    distribution ("normal": N(0, 1); "cauchy": Cauchy(0, 2) by inverse CDF).
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    b, n, c, h = spec["batch"], spec["seqlen"], spec["dim"], spec["hidden"]

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, device=device, dtype=torch.float32)

    if spec["distribution"] == "cauchy":
        u = torch.rand((b, n, n, c), generator=gen, device=device, dtype=torch.float32)
        x = 2.0 * torch.tan(math.pi * (u - 0.5))
    else:
        x = normal(b, n, n, c)
    if spec["masked"]:
        mask = torch.randint(0, 2, (b, n, n), generator=gen, device=device)
    else:
        mask = torch.ones((b, n, n), device=device, dtype=torch.float32)
    weights = {"norm.weight": normal(c), "norm.bias": normal(c),
               **{f"{name}.weight": normal(h, c) / math.sqrt(h) for name in PROJECTIONS},
               "to_out_norm.weight": normal(h), "to_out_norm.bias": normal(h),
               "to_out.weight": normal(c, h) / math.sqrt(c)}
    return {"input": x, "mask": mask, "weights": weights, "config": {"dim": c, "hidden_dim": h}}


def program_data(inputs: dict[str, Any]) -> tuple[Any, ...]:
    """What custom_kernel receives: clones, so nothing it does reaches the harness's copies."""
    return (inputs["input"].clone(), inputs["mask"].clone(),
            {k: v.clone() for k, v in inputs["weights"].items()}, dict(inputs["config"]))


def modified_inputs(inputs: dict[str, Any], data: tuple[Any, ...]) -> list[str]:
    """Names of the tensors custom_kernel changed in place (reported, never trusted)."""
    given_x, given_mask, given_weights, _ = data
    names = [name for name, a, b in (("input", inputs["input"], given_x), ("mask", inputs["mask"], given_mask))
             if not torch.equal(a, b)]
    return names + [f"weights[{k!r}]" for k, v in inputs["weights"].items()
                    if not torch.equal(v, given_weights.get(k, v))]


def output_nbytes(inputs: dict[str, Any]) -> list[int]:
    return [inputs["input"].numel() * 4]


def outputs(result: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor]:
    """The returned value must be one tensor of the input's shape on the input's device."""
    x = inputs["input"]
    if not isinstance(result, torch.Tensor):
        raise ValueError(f"custom_kernel must return one torch.Tensor of shape {tuple(x.shape)}, "
                         f"got {type(result).__name__}")
    if tuple(result.shape) != tuple(x.shape):
        raise ValueError(f"custom_kernel returned shape {tuple(result.shape)}, expected {tuple(x.shape)}")
    if result.device != x.device:
        raise ValueError(f"custom_kernel returned a tensor on {result.device}, expected {x.device}")
    return (result,)


def reference(inputs: dict[str, Any]) -> tuple[torch.Tensor]:
    """The outgoing TriMul in fp32 (the harness turns TF32 off around it)."""
    x, w = inputs["input"], inputs["weights"]
    c, h = inputs["config"]["dim"], inputs["config"]["hidden_dim"]
    m = inputs["mask"].to(torch.float32).unsqueeze(-1)
    xn = F.layer_norm(x, (c,), w["norm.weight"], w["norm.bias"], eps=EPS)
    left = F.linear(xn, w["left_proj.weight"]) * m * torch.sigmoid(F.linear(xn, w["left_gate.weight"]))
    right = F.linear(xn, w["right_proj.weight"]) * m * torch.sigmoid(F.linear(xn, w["right_gate.weight"]))
    out_gate = torch.sigmoid(F.linear(xn, w["out_gate.weight"]))
    o = torch.einsum("bikh,bjkh->bijh", left, right)
    o = F.layer_norm(o, (h,), w["to_out_norm.weight"], w["to_out_norm.bias"], eps=EPS)
    return (F.linear(o * out_gate, w["to_out.weight"]),)
