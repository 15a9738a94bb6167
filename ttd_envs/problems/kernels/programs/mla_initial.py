"""MLA decode, correct and unoptimised: PyTorch for the projections, RoPE and the materialised
K/V; one Triton kernel does the attention of each (batch, head) over every cached row with an
online softmax in fp32."""
import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl


@triton.jit
def _decode_attention(qn_ptr, qr_ptr, kn_ptr, kr_ptr, v_ptr, o_ptr, length, scale,
                      s_qn_b, s_qn_h, s_qr_b, s_qr_h, s_kn_b, s_kn_t, s_kn_h, s_kr_b, s_kr_t,
                      s_v_b, s_v_t, s_v_h, s_o_b, s_o_h,
                      DN: tl.constexpr, DR: tl.constexpr, DV: tl.constexpr, BLOCK_T: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    dn = tl.arange(0, DN)
    dr = tl.arange(0, DR)
    dv = tl.arange(0, DV)
    q_nope = tl.load(qn_ptr + b * s_qn_b + h * s_qn_h + dn).to(tl.float32)
    q_rope = tl.load(qr_ptr + b * s_qr_b + h * s_qr_h + dr).to(tl.float32)
    best = tl.full([1], float("-inf"), tl.float32)
    total = tl.zeros([1], tl.float32)
    acc = tl.zeros([DV], tl.float32)
    for start in range(0, length, BLOCK_T):
        t = start + tl.arange(0, BLOCK_T)
        inside = t < length
        k_nope = tl.load(kn_ptr + b * s_kn_b + t[:, None] * s_kn_t + h * s_kn_h + dn[None, :],
                         mask=inside[:, None], other=0.0).to(tl.float32)
        k_rope = tl.load(kr_ptr + b * s_kr_b + t[:, None] * s_kr_t + dr[None, :],
                         mask=inside[:, None], other=0.0).to(tl.float32)
        scores = (tl.sum(k_nope * q_nope[None, :], axis=1) + tl.sum(k_rope * q_rope[None, :], axis=1)) * scale
        scores = tl.where(inside, scores, float("-inf"))
        new_best = tl.maximum(best, tl.max(scores, axis=0))
        weights = tl.exp(scores - new_best)
        shrink = tl.exp(best - new_best)
        v = tl.load(v_ptr + b * s_v_b + t[:, None] * s_v_t + h * s_v_h + dv[None, :],
                    mask=inside[:, None], other=0.0).to(tl.float32)
        acc = acc * shrink + tl.sum(weights[:, None] * v, axis=0)
        total = total * shrink + tl.sum(weights, axis=0)
        best = new_best
    tl.store(o_ptr + b * s_o_b + h * s_o_h + dv, (acc / total).to(tl.bfloat16))


def _rotate(t, positions):
    half = t.shape[-1] // 2
    freqs = (10000.0 ** (-torch.arange(half, device=t.device, dtype=torch.float32) / half)).to(torch.bfloat16)
    angles = positions.to(torch.bfloat16)[:, None] * freqs[None, :]
    cos = torch.cat([angles.float().cos()] * 2, -1).to(torch.bfloat16)
    sin = torch.cat([angles.float().sin()] * 2, -1).to(torch.bfloat16)
    return t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin


def custom_kernel(data):
    config, x, kv_cache = data
    b, heads = x.shape[0], config.n_heads
    dkv, dn, dr, dv = config.kv_lora_rank, config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
    position = kv_cache.seq_len
    q = F.linear(F.linear(x, config.Q_proj_down), config.Q_proj_up).view(b, heads, dn + dr)
    rows, length = kv_cache(F.linear(x, config.KV_proj_down))
    latent, k_rope = rows.split([dkv, dr], dim=-1)
    kv = F.linear(latent, config.KV_proj_up).view(b, length, heads, dn + dv)
    k_nope, v = kv[..., :dn], kv[..., dn:]
    q_nope = q[..., :dn]
    q_rope = _rotate(q[..., dn:], torch.tensor([position], device=x.device)).contiguous()
    k_rope = _rotate(k_rope, torch.arange(length, device=x.device)).contiguous()
    o = torch.empty((b, heads, dv), device=x.device, dtype=torch.bfloat16)
    _decode_attention[(b, heads)](
        q_nope, q_rope, k_nope, k_rope, v, o, length, 1.0 / math.sqrt(dn + dr),
        q_nope.stride(0), q_nope.stride(1), q_rope.stride(0), q_rope.stride(1),
        k_nope.stride(0), k_nope.stride(1), k_nope.stride(2), k_rope.stride(0), k_rope.stride(1),
        v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1),
        DN=dn, DR=dr, DV=dv, BLOCK_T=64)
    y = F.linear(o.view(b, 1, heads * dv), config.wo)
    return y, kv_cache.data
