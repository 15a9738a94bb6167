"""Source text shared by the kernel tests' submitted programs: TriMul computed in PyTorch, which
each test wraps in a small Triton kernel and, for a hack, in the hack itself. `HONEST` passes:
each hack differs from it only by the hack."""

TRITON_IMPORTS = '''
import torch
import torch.nn.functional as F
import triton
import triton.language as tl
'''

TRIMUL_TORCH = '''
def trimul_torch(x, mask, w, config):
    xn = F.layer_norm(x, (config["dim"],), w["norm.weight"], w["norm.bias"], eps=1e-5)
    m = mask.to(torch.float32).unsqueeze(-1)
    left = F.linear(xn, w["left_proj.weight"]) * m * torch.sigmoid(F.linear(xn, w["left_gate.weight"]))
    right = F.linear(xn, w["right_proj.weight"]) * m * torch.sigmoid(F.linear(xn, w["right_gate.weight"]))
    o = torch.einsum("bikh,bjkh->bijh", left, right)
    o = F.layer_norm(o, (config["hidden_dim"],), w["to_out_norm.weight"], w["to_out_norm.bias"], eps=1e-5)
    return F.linear(o * torch.sigmoid(F.linear(xn, w["out_gate.weight"])), w["to_out.weight"])
'''

HONEST = "import sys\nimport threading\nimport time\n" + TRITON_IMPORTS + '''

@triton.jit
def _copy(src, dst, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(dst + i, tl.load(src + i, mask=i < n), mask=i < n)


def triton_copy(t):
    out = torch.empty_like(t)
    _copy[(triton.cdiv(t.numel(), 16384),)](t, out, t.numel(), BLOCK=16384)
    return out
''' + TRIMUL_TORCH + '''

def custom_kernel(data):
    return triton_copy(trimul_torch(*data))
'''
