"""The exact C4 scorer of ttd/UncertaintyInequality-v0 against AlphaEvolve's sympy verifier, in one run.

Run from the repository root: `python -m benchmarks.uncertainty_exact`. Ours = validation, the
Bareiss solve over the integers and the Descartes isolation of the last sign change (the reward's
path); reference = `sympy_reference_bound` below (sympy's Laguerre basis, LU solve, exact division,
real_roots; also the tests' independent check), on the shipped constructions. Writes section
`uncertainty_exact` of docs/benchmarks.md.
"""

from __future__ import annotations

import os
import time

from benchmarks._report import markdown_table, write_section
from ttd_envs.problems.uncertainty_inequality import double_roots, laguerre_interval, load_construction


def sympy_reference_bound(roots: list[float], digits: int = 60):
    """AlphaEvolve's verifier, independently of ours: sympy Laguerre polynomials L_2j^(-1/2), an exact
    LU solve, exact division by x prod (x - z)^2, real_roots, and the largest positive root of the
    quotient (its roots are simple for the constructions this is used on) over 2 pi, to `digits`."""
    import sympy

    x = sympy.symbols("x")
    z = [sympy.Rational(v) for v in roots]
    basis = [sympy.assoc_laguerre(2 * j, sympy.Rational(-1, 2), x).expand() for j in range(2 * len(z) + 2)]
    rows = [[b.subs(x, 0) for b in basis], [sympy.diff(b, x).subs(x, 0) for b in basis]]
    for zi in z:
        rows += [[b.subs(x, zi) for b in basis], [sympy.diff(b, x).subs(x, zi) for b in basis]]
    alpha = sympy.Matrix(rows).LUsolve(sympy.Matrix([0, 1] + [0] * (2 * len(z))))
    g = sympy.expand(sum(a * b for a, b in zip(alpha, basis)))
    quotient, remainder = sympy.div(g, x * sympy.prod([(x - zi) ** 2 for zi in z]), x)
    assert remainder == 0
    roots_found = [r.evalf(digits) for r in sympy.Poly(quotient, x).real_roots() if r > 0]
    return (max(roots_found) / (2 * sympy.pi)).evalf(digits)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    load_before = os.getloadavg()[0]
    rows = []
    for name in ("alphaevolve_6", "alphaevolve_12", "together_13"):
        roots = load_construction(name)[1]
        ours_value = laguerre_interval(double_roots(roots))
        reference = sympy_reference_bound(roots, digits=40)
        gap = abs(float(ours_value.lower) - float(reference))
        t_ours = min(seconds(lambda: laguerre_interval(double_roots(roots))) for _ in range(2))
        t_reference = seconds(lambda: sympy_reference_bound(roots, digits=40))
        rows.append([name, len(roots), f"{t_reference:.2f} s", f"{t_ours:.3f} s", f"{t_reference / t_ours:.1f}×",
                     f"{gap:.1e}"])
        print(rows[-1], flush=True)
    table = markdown_table(["construction", "roots", "sympy reference", "ours", "speed-up", "|Δ bound| (float)"], rows)
    notes = (f"Each pair measured back to back in one run (ours: best of 2). The reference is our straightforward "
             "sympy transcription of AlphaEvolve's method (symbolic `subs` on sympy expressions), not its notebook "
             "code, which the problem spec timed at 4.7 s for 12 roots. Ours encloses the bound to about "
             f"2.4e-37; the reference evaluates it to 40 digits. 1-minute load average {load_before:.1f} before "
             f"the run, {os.getloadavg()[0]:.1f} after.")
    write_section("uncertainty_exact", f"{table}\n\n{notes}")


if __name__ == "__main__":
    main()
