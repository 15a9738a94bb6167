"""ttd/MLADecode-v0: one decode step of DeepSeek-V3 multi-head latent attention, in Triton.

Shapes, tolerances and the timing procedure follow the GPU MODE MLA-decode leaderboard (batch 128,
dim 7168, 128 heads, latent 512 + rope 64, bf16 throughout, wall-clock timing, only the prefill-6144
benchmark ranked). Without a GPU, `timing=False` checks a down-scaled config under Triton's
interpreter (`SMALL_CONFIG`); docs/envs/mla_decode.md says what differs from upstream.
"""

from __future__ import annotations

from typing import Any, Literal

from ttd_envs.core.problem import TrainerDefaults
from ttd_envs.core.state import State
from ttd_envs.records import record_for
from ttd_envs.problems.kernels.problem import HarnessPlan, KernelProblem, function_source, read_program
from ttd_envs.problems.kernels.timing import TimingRule

FULL_CONFIG = {"batch_size": 128, "dim": 7168, "n_heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512,
               "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "max_seq_len": 8192}
FULL_TESTS = (128, 512, 1024, 2048)
FULL_BENCHMARKS = (6144,)
"""The leaderboard ranks only this one (its 4096 benchmark is not timed in ranked mode)."""
SMALL_CONFIG = {"batch_size": 2, "dim": 256, "n_heads": 4, "q_lora_rank": 64, "kv_lora_rank": 64,
                "qk_nope_head_dim": 32, "qk_rope_head_dim": 32, "v_head_dim": 32, "max_seq_len": 128}
SMALL_TESTS = (32, 96)
SMALL_BENCHMARKS = (64,)
TIMING = TimingRule(max_reps=100, min_reps=3, target_rel_err=0.01, max_total_s=30.0, max_loop_s=None,
                    warmup_s=0.2, warmup_max_reps=10_000)
TARGET_US = 1700.0


class MLADecode(KernelProblem):
    """ttd/MLADecode-v0. Kwargs: `timing` (False: correctness only), `config` ("full": the
    leaderboard's sizes, needs a large GPU (the reference materialises ~51 GB at prefill 6144);
    "small": the down-scaled config the CPU interpreter can check; default "full" when timing,
    else "small" without a GPU), `gpu`, `timeout_s`, `reward_scale` (reward = scale / µs)."""

    name = "MLADecode"
    summary = "DeepSeek-V3 multi-head latent attention, one decode step, as a fast Triton kernel"
    record = record_for("MLADecode")
    defaults = TrainerDefaults(model_kind="llm", eval_timeout_s=1200.0, max_new_tokens=26000, gpus_per_eval=1)
    task = "mla_decode"
    env_id = "ttd/MLADecode-v0"

    def __init__(self, timing: bool = True, config: Literal["full", "small"] | None = None, gpu: str | int | None = None,
                 timeout_s: float | None = None, reward_scale: float = 3000.0) -> None:
        super().__init__(timing=timing, timeout_s=timeout_s, gpu=gpu, reward_scale=reward_scale)
        config = config or ("full" if self.on_gpu else "small")
        if config not in ("full", "small"):
            raise ValueError(f"config must be 'full' or 'small', got {config!r}")
        self.config = config

    def spec(self, prefill: int, kind: str) -> dict[str, Any]:
        sizes = FULL_CONFIG if self.config == "full" else SMALL_CONFIG
        return {"name": f"{kind} prefill={prefill} ({self.config} config)", "prefill": prefill, **sizes}

    def plan(self) -> HarnessPlan:
        tests, benchmarks = (FULL_TESTS, FULL_BENCHMARKS) if self.config == "full" else (SMALL_TESTS, SMALL_BENCHMARKS)
        return HarnessPlan(tests=[self.spec(p, "test") for p in tests],
                           benchmarks=[self.spec(p, "benchmark") for p in benchmarks],
                           rule=TIMING if self.timing else None, device=self.device())

    def min_traffic_bytes(self, benchmark: dict[str, Any]) -> int:
        """Every weight once, every filled latent cache row (new one included), x and y; bf16."""
        s = benchmark
        heads, dim = s["n_heads"], s["dim"]
        weights = (s["q_lora_rank"] * dim + (s["kv_lora_rank"] + s["qk_rope_head_dim"]) * dim
                   + heads * (s["qk_nope_head_dim"] + s["qk_rope_head_dim"]) * s["q_lora_rank"]
                   + heads * (s["qk_nope_head_dim"] + s["v_head_dim"]) * s["kv_lora_rank"]
                   + dim * heads * s["v_head_dim"])
        cache = s["batch_size"] * (s["prefill"] + 1) * (s["kv_lora_rank"] + s["qk_rope_head_dim"])
        return 2 * (weights + cache + 2 * s["batch_size"] * dim)

    def initial_code(self) -> str:
        return read_program("mla_initial")

    def prompt(self, state: State) -> str:
        c = FULL_CONFIG
        parts = [
            "# Write a fast Triton kernel: one decode step of multi-head latent attention (DeepSeek-V3)",
            "You are an expert GPU programmer. Make `custom_kernel(data)` compute the decode step below as fast "
            "as possible on an NVIDIA H200, with Triton doing at least part of the work.",
            "",
            "## The operation (bf16 throughout)",
            "The query token x is projected down (W_dq) and up (W_uq) into per-head q = [q_nope | q_rope]; its "
            "latent c_kv = x W_dkv^T (latent 512 + rope key 64) is appended to the cache at row `kv_cache.seq_len`. "
            "For every cached row the latent part is projected up (W_ukv) into per-head k_nope and v; the last 64 "
            "values are a rope key shared by all heads, stored unrotated. RoPE is rotate-half with frequencies "
            "10000^(-i/32) whose frequencies, angles and cos/sin are rounded to bf16, exactly as in the reference "
            "below (fp32 angles give different values at large positions). Scores (q_nope·k_nope + q_rope·k_rope) "
            "/ sqrt(192), softmax over the rows, weighted sum of v, heads concatenated and projected by W_o.",
            "The reference implementation (PyTorch; `rotate` is its RoPE):",
            "```python",
            "ROPE_BASE = 10000.0",
            "",
            function_source("mla_task", "rotate"),
            "",
            function_source("mla_task", "reference"),
            "```",
            "",
            "## Contract",
            "Write one ```python block that defines `custom_kernel(data)`. `data = (config, x, kv_cache)`: "
            "`config` has batch_size, dim, n_heads, q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, "
            "v_head_dim, max_seq_len and the bf16 weights Q_proj_down, KV_proj_down, Q_proj_up, KV_proj_up, wo "
            "(nn.Linear layout [out, in]); `x` is [batch, 1, dim]; `kv_cache.data` is [batch, max_seq_len, 576] "
            "with `kv_cache.seq_len` rows filled, and `kv_cache(c_kv)` appends rows and returns (filled rows, "
            "new seq_len). Return `(y, kv_cache.data)`: y [batch, 1, dim] bf16, and the whole cache buffer with "
            "the new row written. Do not import anything from the harness: the types come with the data.",
            f"Sizes: batch {c['batch_size']}, dim {c['dim']}, {c['n_heads']} heads, q rank {c['q_lora_rank']}, kv "
            f"rank {c['kv_lora_rank']}, nope 128, rope 64, v 128, cache {c['max_seq_len']} rows. Correctness "
            f"prefills {', '.join(map(str, FULL_TESTS))}; timed prefill {FULL_BENCHMARKS[0]}. Correct means "
            "|out − ref| ≤ 0.008 + 0.02·|ref| for y and for the cache.",
            "Ideas that work: attend over the 576-wide latent cache directly, absorbing the up-projections into "
            "the query and the output, instead of materialising K and V for every row; fuse RoPE and the softmax.",
            "",
            "## How it is judged",
            "Every call gets fresh weights, input and cache from an unpredictable seed and is checked against the "
            "reference (which you cannot import). Runtime = wall clock between two device-wide synchronisations, "
            "L2 flushed before each call, repeated until the standard error is under 1 %. Reward = 3000 / runtime "
            "in µs. Rejected: no @triton.jit kernel launched in a call, a fallback to PyTorch only, patching "
            "timers or torch, threads left running, cached outputs.",
            "Triton tips: tl.arange sizes are constexpr powers of two (192 is not: split nope and rope); bf16 "
            "arithmetic is safest after .to(tl.float32); tl.dot needs both sides at least 16 wide.",
            "Start the program with a short docstring that says what it does.",
            "",
            f"Reference points: best human 1787 µs (MI300X leaderboard); TTT-Discover's starting program took "
            f"3846 µs on an H200. Target: {TARGET_US:g} µs.",
            "",
            *self.program_section(state),
        ]
        return "\n".join(parts)
