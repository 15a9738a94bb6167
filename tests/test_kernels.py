"""Kernel envs on the CPU: references against float64, our Triton programs under the interpreter,
a wrong kernel's mismatch count, make-time errors, check_env, and the pure timing arithmetic."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from importlib import resources

import gymnasium as gym
from gymnasium.utils.env_checker import check_env
import numpy as np
import pytest

torch = pytest.importorskip("torch")
triton = pytest.importorskip("triton")

import ttd_envs  # noqa: E402,F401 - registers the ids
from ttd_envs.core.program_problem import InvalidConstruction  # noqa: E402
from ttd_envs.problems.kernels import mla_task, trimul_task  # noqa: E402
from ttd_envs.problems.kernels.mla_decode import SMALL_CONFIG, MLADecode  # noqa: E402
from ttd_envs.problems.kernels.problem import missing_triton_kernel  # noqa: E402
from ttd_envs.problems.kernels.timing import TimingRule, geometric_mean, rep_stats, should_stop  # noqa: E402
from ttd_envs.problems.kernels.trimul import TriMul  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

CUDA = torch.cuda.is_available()


def fenced(code: str) -> str:
    return f"```python\n{code}```"


@pytest.fixture(scope="module")
def trimul() -> TriMul:
    problem = TriMul(timing=False)
    yield problem
    problem.close()


@pytest.fixture(scope="module")
def mla() -> MLADecode:
    problem = MLADecode(timing=False, config="small")
    yield problem
    problem.close()


# -- references against float64 re-implementations --------------------------------------------------
def trimul_float64(inputs: dict) -> np.ndarray:
    """The outgoing TriMul written out in numpy float64, from the formula in trimul_task's docstring."""
    x = inputs["input"].double().numpy()
    w = {k: v.double().numpy() for k, v in inputs["weights"].items()}
    m = inputs["mask"].double().numpy()[..., None]

    def layer_norm(a: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
        mean = a.mean(-1, keepdims=True)
        var = ((a - mean) ** 2).mean(-1, keepdims=True)
        return (a - mean) / np.sqrt(var + 1e-5) * gamma + beta

    def sigmoid(a: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-a))

    xn = layer_norm(x, w["norm.weight"], w["norm.bias"])
    left = xn @ w["left_proj.weight"].T * m * sigmoid(xn @ w["left_gate.weight"].T)
    right = xn @ w["right_proj.weight"].T * m * sigmoid(xn @ w["right_gate.weight"].T)
    o = np.einsum("bikh,bjkh->bijh", left, right)
    gated = layer_norm(o, w["to_out_norm.weight"], w["to_out_norm.bias"]) * sigmoid(xn @ w["out_gate.weight"].T)
    return gated @ w["to_out.weight"].T


@pytest.mark.parametrize("masked,distribution", [(False, "normal"), (True, "normal"), (False, "cauchy")])
def test_trimul_reference_matches_float64(masked: bool, distribution: str) -> None:
    spec = {"batch": 2, "seqlen": 16, "dim": 64, "hidden": 32, "masked": masked, "distribution": distribution}
    inputs = trimul_task.generate(spec, seed=7, device="cpu")
    if masked:
        assert inputs["mask"].dtype == torch.int64 and 0 < inputs["mask"].float().mean() < 1
    (ours,) = trimul_task.reference(inputs)
    exact = trimul_float64(inputs)
    assert ours.dtype == torch.float32 and ours.shape == (2, 16, 16, 64)
    np.testing.assert_allclose(ours.double().numpy(), exact, rtol=1e-4, atol=1e-4)


def test_trimul_inputs_are_seeded() -> None:
    spec = {"batch": 1, "seqlen": 8, "dim": 16, "hidden": 8, "masked": True, "distribution": "cauchy"}
    a, b, c = (trimul_task.generate(spec, seed, "cpu") for seed in (3, 3, 4))
    assert torch.equal(a["input"], b["input"]) and torch.equal(a["mask"], b["mask"])
    assert torch.equal(a["weights"]["to_out.weight"], b["weights"]["to_out.weight"])
    assert not torch.equal(a["input"], c["input"])
    assert not torch.equal(a["weights"]["norm.bias"], c["weights"]["norm.bias"])


def mla_float64(inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """The decode step in float64 (RoPE's bf16 angles and cos/sin are part of the definition)."""
    cfg, prefill = inputs["config"], inputs["prefill"]
    d = {n: getattr(cfg, n).double().numpy() for n in mla_task.WEIGHTS}
    x = inputs["x"].double().numpy()
    b, heads, dkv = x.shape[0], cfg.n_heads, cfg.kv_lora_rank
    dn, dr, dv = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
    cache = inputs["cache"].double().numpy().copy()
    cache[:, prefill] = (x @ d["KV_proj_down"].T)[:, 0]
    rows = cache[:, :prefill + 1]
    q = (x @ d["Q_proj_down"].T @ d["Q_proj_up"].T).reshape(b, heads, dn + dr)
    kv = (rows[..., :dkv] @ d["KV_proj_up"].T).reshape(b, prefill + 1, heads, dn + dv)

    def rope(t: np.ndarray, positions: torch.Tensor) -> np.ndarray:
        half = dr // 2
        freqs = (10000.0 ** (-torch.arange(half, dtype=torch.float32) / half)).to(torch.bfloat16)
        angles = positions.to(torch.bfloat16)[:, None] * freqs[None, :]
        cos = np.concatenate([angles.float().cos().to(torch.bfloat16).double().numpy()] * 2, -1)
        sin = np.concatenate([angles.float().sin().to(torch.bfloat16).double().numpy()] * 2, -1)
        return t * cos + np.concatenate([-t[..., half:], t[..., :half]], -1) * sin

    q_rope = rope(q[..., dn:], torch.tensor([prefill]))
    k_rope = rope(rows[..., dkv:], torch.arange(prefill + 1))
    scores = (np.einsum("bhd,bthd->bht", q[..., :dn], kv[..., :dn]) + np.einsum("bhd,btd->bht", q_rope, k_rope))
    scores /= math.sqrt(dn + dr)
    attention = np.exp(scores - scores.max(-1, keepdims=True))
    attention /= attention.sum(-1, keepdims=True)
    o = np.einsum("bht,bthd->bhd", attention, kv[..., dn:]).reshape(b, 1, heads * dv)
    return o @ d["wo"].T, cache


def test_mla_reference_matches_float64() -> None:
    spec = {**SMALL_CONFIG, "prefill": 40}
    inputs = mla_task.generate(spec, seed=11, device="cpu")
    before = inputs["cache"].clone()
    y, cache = mla_task.reference(inputs)
    assert torch.equal(inputs["cache"], before), "the reference must work on its own copy of the cache"
    exact_y, exact_cache = mla_float64(inputs)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 1, SMALL_CONFIG["dim"])
    np.testing.assert_allclose(y.double().numpy(), exact_y, rtol=mla_task.RTOL, atol=mla_task.ATOL)
    np.testing.assert_allclose(cache.double().numpy(), exact_cache, rtol=mla_task.RTOL, atol=mla_task.ATOL)


def test_rope_angles_collapse_in_bf16() -> None:
    """The leaderboard's quirk we keep: positions 6140..6144 share one bf16 angle."""
    t = torch.ones(5, 64, dtype=torch.bfloat16)
    rotated = mla_task.rotate(t, torch.arange(6140, 6145))
    assert all(torch.equal(rotated[0], row) for row in rotated[1:])


# -- our programs under the interpreter, through the sandbox ------------------------------------------
@pytest.mark.slow
def test_trimul_initial_program_passes_under_the_interpreter(trimul: TriMul) -> None:
    state = trimul.initial_state(np.random.default_rng(0))
    evaluation = trimul.evaluate(fenced(state.code), state)
    assert evaluation.valid, evaluation.error
    assert evaluation.reward == 1.0 and 0 <= evaluation.score < 1e-3  # correctness only: the largest error
    assert "largest abs error" in trimul.prompt(evaluation.child_of(state))
    names = [t["name"] for t in evaluation.construction["tests"]]
    assert any("random mask" in n for n in names) and any("cauchy" in n for n in names)
    assert all(t["max_abs_error"] < 1e-3 for t in evaluation.construction["tests"])


@pytest.mark.slow
def test_wrong_trimul_kernel_fails_with_the_mismatch_count(trimul: TriMul) -> None:
    code = trimul.initial_code().replace("normed * gate, mask=inside", "normed * gate * 1.5, mask=inside")
    evaluation = trimul.evaluate(fenced(code), trimul.initial_state(np.random.default_rng(0)))
    assert not evaluation.valid and evaluation.reward == 0.0
    assert "test 1 (N=32" in evaluation.error
    assert "of 131072 elements differ by more than atol 0.02" in evaluation.error
    assert "first at [(0, 0, 0," in evaluation.error


@pytest.mark.slow
def test_mla_initial_program_passes_on_the_small_config(mla: MLADecode) -> None:
    state = mla.initial_state(np.random.default_rng(0))
    evaluation = mla.evaluate(fenced(state.code), state)
    assert evaluation.valid, evaluation.error
    assert [t["name"] for t in evaluation.construction["tests"]] == [
        "test prefill=32 (small config)", "test prefill=96 (small config)"]


@pytest.mark.slow
def test_mla_program_that_skips_the_new_row_fails(mla: MLADecode) -> None:
    """Attending without appending the new token's latent misses a row in y and in the cache."""
    code = mla.initial_code().replace("rows, length = kv_cache(F.linear(x, config.KV_proj_down))",
                                      "rows, length = kv_cache.data[:, :kv_cache.seq_len], kv_cache.seq_len")
    evaluation = mla.evaluate(fenced(code), mla.initial_state(np.random.default_rng(0)))
    assert not evaluation.valid
    assert "does not match the reference" in evaluation.error


@pytest.mark.slow
@pytest.mark.parametrize("program,kernel,types,constants", [
    ("trimul_initial", "_norm_gate_kernel", ["*fp32"] * 5 + ["i32", "fp32"], {"H": 128, "BLOCK_ROWS": 32}),
    ("mla_initial", "_decode_attention", ["*bf16"] * 6 + ["i32", "fp32"] + ["i32"] * 14,
     {"DN": 128, "DR": 64, "DV": 128, "BLOCK_T": 64}),
])
def test_our_kernels_compile_for_an_h100_without_a_gpu(program: str, kernel: str, types: list[str],
                                                        constants: dict[str, int]) -> None:
    """The interpreter forgives what the compiler refuses (loop-carried types, shapes): compile our
    initial programs' kernels to a cubin for sm_90 with Triton's own compiler, no GPU needed."""
    path = resources.files("ttd_envs.problems.kernels.programs").joinpath(f"{program}.py")
    spec = importlib.util.spec_from_file_location(program, str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, kernel)
    signature = dict(zip(fn.arg_names, types + ["constexpr"] * len(constants)))
    source = ASTSource(fn=fn, signature=signature,
                       constexprs={(fn.arg_names.index(k),): v for k, v in constants.items()})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
    assert compiled.asm["cubin"]


# -- make time, env contract --------------------------------------------------------------------------
@pytest.mark.skipif(CUDA, reason="checks the message given when there is no CUDA GPU")
def test_timing_without_cuda_fails_at_make_with_the_way_out() -> None:
    for env_id in ("ttd/TriMul-v0", "ttd/MLADecode-v0"):
        with pytest.raises(RuntimeError, match="needs a CUDA GPU for timing; pass timing=False"):
            gym.make(env_id)


def test_without_torch_and_triton_the_package_imports_and_make_says_what_is_needed() -> None:
    script = """
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'triton'):
            raise ImportError('hidden for this test: ' + name)
sys.meta_path.insert(0, Hide())
import gymnasium as gym, ttd_envs
from ttd_envs.problems.kernels import trimul, mla_decode
try:
    gym.make('ttd/TriMul-v0', timing=False)
except RuntimeError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "needs torch and triton: pip install 'ttd[kernels]'" in out.stdout
    assert "timing=False checks correctness only" in out.stdout


def test_bad_options_fail_at_make() -> None:
    with pytest.raises(ValueError, match="mask must be"):
        TriMul(timing=False, mask="none")
    with pytest.raises(ValueError, match="config must be"):
        MLADecode(timing=False, config="medium")


def test_check_env_passes_with_timing_off() -> None:
    for env_id in ("ttd/TriMul-v0", "ttd/MLADecode-v0"):
        env = gym.make(env_id, timing=False)
        check_env(env.unwrapped, skip_render_check=True)
        obs, info = env.reset(seed=0)
        assert "custom_kernel(data)" in obs and "@triton.jit" in obs and info["state"].code
        env.close()


def test_prompts_state_the_mask_behaviour(trimul: TriMul) -> None:
    leaderboard = TriMul(timing=False, mask="leaderboard")
    state = trimul.initial_state(np.random.default_rng(0))
    assert "must be applied" in trimul.prompt(state)
    assert "all-ones fp32 mask (the leaderboard's behaviour)" in leaderboard.prompt(state)
    assert all(not spec["masked"] for spec in leaderboard.plan().tests)
    assert any(spec["masked"] for spec in trimul.plan().tests)


def test_gpu_resource_in_trainer_defaults() -> None:
    assert TriMul.defaults.gpus_per_eval == 1 and MLADecode.defaults.gpus_per_eval == 1


# -- static checks and timing arithmetic --------------------------------------------------------------
def test_static_check_wants_a_triton_kernel() -> None:
    assert "defines no @triton.jit kernel" in missing_triton_kernel("def custom_kernel(data):\n    return data\n")
    assert "does not parse" in missing_triton_kernel("def custom_kernel(:\n")
    assert missing_triton_kernel("import triton\n@triton.jit\ndef k(x):\n    pass\n") is None
    assert missing_triton_kernel("from triton import jit\n@jit(do_not_specialize=['n'])\ndef k(n):\n    pass\n") is None


def test_stopping_rule_and_statistics() -> None:
    rule = TimingRule(max_reps=10, min_reps=3, target_rel_err=0.01, max_total_s=1.0, max_loop_s=5.0)
    assert not should_stop([100, 100], rule, 0.0)
    assert should_stop([100, 100, 100], rule, 0.0)  # no spread: the error is 0
    noisy = [100, 300, 100, 300]
    assert not should_stop(noisy, rule, 0.0)
    assert should_stop(noisy, rule, 6.0)  # the wall-clock bound of the loop
    assert should_stop([400_000_000] * 3, rule, 0.0) is True  # mean x reps passed 1 s
    assert should_stop(noisy * 3, rule, 0.0)  # max_reps
    stats = rep_stats([1, 2, 3, 4])
    assert stats["mean_ns"] == 2.5 and math.isclose(stats["std_ns"], math.sqrt(5 / 3))
    assert math.isclose(stats["err_ns"], stats["std_ns"] / 2) and stats["best_ns"] == 1 and stats["worst_ns"] == 4
    assert math.isclose(geometric_mean([1.0, 100.0]), 10.0)


def test_impossible_speed_up_is_flagged(trimul: TriMul) -> None:
    timed = TriMul(timing=False)
    timed.timing = True  # judge numbers as a timed run would; nothing runs here
    plan = timed.plan()
    honest = [{"name": s["name"], "mean_ns": 2e6, "best_ns": 1.9e6} for s in plan.benchmarks]
    bandwidth = 4e12  # bytes/s, an H100-class copy
    assert math.isclose(timed.score_benchmarks(honest, bandwidth), 2000.0)
    fast = [dict(row) for row in honest]
    fast[-1]["best_ns"] = 1e3  # 1 µs for a 1024 x 1024 x 384 fp32 input and output
    with pytest.raises(InvalidConstruction, match="impossible speed-up"):
        timed.score_benchmarks(fast, bandwidth)
    assert timed.reward_for(1161.0) == pytest.approx(3000 / 1161)
