#!/usr/bin/env bash
# Every GPU check in one go, on one CUDA GPU, in under 5 minutes, then one summary table:
#   1. kernel envs timed: TriMul through env.step, then its benchmarks again for our initial program
#      and twice for its PyTorch reference (the spread); MLA decode;
#      and the guards only a GPU can exercise (hidden stream work, stale device memory, L2 flush);
#   2. the kernel envs' CPU-side tests, compiled on the GPU this time;
#   3. every other GPU-marked test in tests/ (vLLM where installed, else skipped with the reason);
#   4. the HF LoRA backend in bf16 on a random Llama with SmolLM2-360M's shape (no download);
#   5. scripts/gpu_llm_check.py (the LLM path at scale), or "missing" if it is not there.
# Assumes torch, triton, transformers and peft (plus the project's own light dependencies and
# pytest). Without CUDA it stops at once and says why. Logs: $GPU_CHECK_LOGS (default: a temp dir).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
if [[ -z "${VIRTUAL_ENV:-}" && -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOGS=${GPU_CHECK_LOGS:-$(mktemp -d -t ttd-gpu-check-XXXXXX)}
mkdir -p "$LOGS"
export TTD_GPU_RESULTS="$LOGS/timings.jsonl"
: > "$TTD_GPU_RESULTS"

"$PYTHON" - <<'EOF' || exit 2
import importlib.util, sys
missing = [m for m in ("torch", "triton", "transformers", "peft", "pytest", "gymnasium", "numba")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: missing Python packages: {', '.join(missing)} "
             "(pip install -e '.[agent,kernels,test]'; keep the CUDA build of torch)")
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False; torch "
             f"{torch.__version__}, CUDA build {torch.version.cuda}). This script only runs on a CUDA "
             "machine; on a CPU the normal suite skips the GPU tests and says why.")
props = torch.cuda.get_device_properties(0)
print(f"gpu_check: {props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}; logs in the directory below")
EOF
echo "gpu_check: logs in $LOGS"

ROWS=()
# row NAME TIMEOUT_S COMMAND...: run one check, keep its log, remember status, seconds and a note.
row() {
    local name=$1 limit=$2
    shift 2
    local log="$LOGS/$(echo "$name" | tr -c 'A-Za-z0-9' '_').log"
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    local rc=$? status
    case $rc in
        0) status=PASS ;;
        5) status=SKIP ;;  # pytest: no test selected
        124|137) status=TIMEOUT ;;
        *) status=FAIL ;;
    esac
    if [[ $status == PASS ]] && grep -q ' skipped' "$log" && ! grep -q ' passed' "$log"; then
        status=SKIP
    fi
    local note
    note=$(grep -E 'passed|failed|skipped|error|Error|SKIPPED' "$log" | tail -1 | cut -c1-90)
    ROWS+=("$(printf '%-58s %-8s %5ds  %s' "$name" "$status" $((SECONDS - started)) "${note:-see $log}")")
    echo "${ROWS[-1]}"
}

row "kernels timed + GPU-only guards (test_kernels_gpu.py)" 150 \
    "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_kernels_gpu.py
row "kernels CPU-side tests, compiled on the GPU" 30 \
    "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_kernels.py tests/test_kernels_guards.py
row "other GPU-marked tests (pytest -m gpu)" 25 \
    "$PYTHON" -m pytest -q -rs -p no:cacheprovider -m gpu tests --ignore=tests/test_kernels_gpu.py
row "HF LoRA bf16, random SmolLM2-360M-shaped Llama" 35 "$PYTHON" - <<'EOF'
"""One sample + update of the HF LoRA backend in bf16 on a random Llama with SmolLM2-360M's
layer shapes (32 layers, width 960, 15 heads, 5 KV heads; a 320-token vocabulary keeps the
build fast); nothing is downloaded."""
import math, tempfile, time
from pathlib import Path
import torch
from ttd_agent.policy.base import LossConfig, TrainItem
from ttd_agent.policy.hf import HFPolicy
from ttd_agent.policy.tiny import build_tiny_causal_lm

with tempfile.TemporaryDirectory() as directory:
    path = build_tiny_causal_lm(Path(directory), hidden_size=960, num_hidden_layers=32, num_attention_heads=15,
                                num_key_value_heads=5, intermediate_size=2560)
    started = time.perf_counter()
    policy = HFPolicy(str(path), lora_rank=16, device="cuda", seed=0)
    assert policy.dtype == torch.bfloat16, policy.dtype
    before = {k: v.detach().clone() for k, v in policy.model.named_parameters() if "lora_B" in k}
    samples = [s for group in policy.sample(["Write a kernel.", "Sum 1..n."], 4, temperature=1.0,
                                            max_new_tokens=64) for s in group]
    stats = policy.update([TrainItem(s, float(i % 2) - 0.5) for i, s in enumerate(samples)], LossConfig())
    moved = [k for k, v in policy.model.named_parameters() if k in before and not torch.equal(v, before[k])]
    assert moved and all(math.isfinite(float(v)) for v in stats.values()), stats
    print(f"1 passed: {len(samples)} samples + 1 update in {time.perf_counter() - started:.1f} s, "
          f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB, {len(moved)} LoRA tensors moved")
EOF
if [[ -f scripts/gpu_llm_check.py ]]; then
    row "LLM path at scale (scripts/gpu_llm_check.py)" 60 "$PYTHON" scripts/gpu_llm_check.py
else
    ROWS+=("$(printf '%-58s %-8s %5s   %s' "LLM path at scale (scripts/gpu_llm_check.py)" MISSING - \
        "the file does not exist yet (issue 14)")")
fi

echo
echo "== gpu_check summary ($(date -u +%Y-%m-%dT%H:%MZ)) =="
printf '%-58s %-8s %6s  %s\n' "check" "status" "time" "note"
printf '%s\n' "${ROWS[@]}"
if [[ -s "$TTD_GPU_RESULTS" ]]; then
    echo
    echo "== kernel timings (µs; score = geometric mean of the benchmarks' means) =="
    "$PYTHON" - "$TTD_GPU_RESULTS" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    row = json.loads(line)
    extra = "".join(f"  {k}={row[k]}" for k in ("benchmarks_us", "event_us") if k in row)
    print(f"{row['row']:<48} {row['gpu']:<24} score {row['score_us']:9.1f} µs{extra}")
EOF
fi
! printf '%s\n' "${ROWS[@]}" | grep -qE ' (FAIL|TIMEOUT) '
