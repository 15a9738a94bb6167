"""GPU kernel discovery: the model writes `custom_kernel(data)` with at least one Triton kernel.

Two sides, kept apart on purpose:
- trusted side (no torch at import): `problem.py` (shared), `trimul.py`, `mla_decode.py` build the
  prompt, start the sandbox, and judge the numbers that come back;
- sandbox side (torch, triton): `harness.py` (shared) loads the program, generates inputs, runs
  the reference, checks and times; `trimul_task.py`, `mla_task.py` hold each problem's reference
  and input generation. The program cannot import either.
"""
