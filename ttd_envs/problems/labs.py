"""LABS: a ±1 sequence of length N whose aperiodic autocorrelations are as small as possible.

For s ∈ {+1, −1}^N the aperiodic autocorrelation at lag k is C_k = Σ_{i=1}^{N−k} s_i·s_{i+k} and the
energy is E(s) = Σ_{k=1}^{N−1} C_k² (an integer, lower is better). The merit factor
F = N²/(2E) is the reward (higher is better). E*(N), the minimum over all 2^N sequences, is proven
for N ≤ 66 (Packebusch & Mertens 2016); the package ships that table plus the best known energies
of some odd N up to 119, in `ttd_envs/data/labs/optimal_energies.json`.

The action is data, not code: it is parsed and scored in this process, with no sandbox. Parse
rule (strict): if the answer contains a closed fenced block (a line starting with ``` up to the
next line that is exactly ```, surrounding spaces ignored), the content of the LAST such block is
read; otherwise the whole answer is. Leading and trailing whitespace is stripped, and what is left
must be exactly N characters, each '+' (+1) or '-' (−1). Nothing else is accepted: no spaces,
commas, line breaks, digits or Unicode minus signs inside the sequence.
"""

from __future__ import annotations

import json
import operator
import re
from fractions import Fraction
from functools import cache
from importlib import resources
from typing import Any

import numba
import numpy as np

from ttd_envs.core.arguments import one_of
from ttd_envs.core.drawing import series, series_drawing
from ttd_envs.core.exact import Bound
from ttd_envs.core.parsing import last_fenced_block
from ttd_envs.core.problem import EmbeddedSpec, Evaluation, TrainerDefaults
from ttd_envs.core.program_problem import InvalidConstruction
from ttd_envs.core.state import State
from ttd_envs.records import record_for

MIN_N, MAX_N = 3, 256
MAX_ANSWER_CHARS = 400_000  # the env's action-space limit; longer answers are refused unread
ALPHABET = "+-"
_BAD_CHAR = re.compile(r"[^+\-]")


# --------------------------------------------------------------------------------------------
# The scorer
# --------------------------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _energy_kernel(s: np.ndarray) -> int:  # pragma: no cover - compiled
    """E of one int8 sequence, or -1 when a value is not ±1 (the caller then says which)."""
    n = s.shape[0]
    bad = False
    for i in range(n):
        bad |= (s[i] != 1) & (s[i] != -1)
    if bad:
        return -1
    total = np.int64(0)
    for k in range(1, n):
        c = np.int64(0)
        for i in range(n - k):
            c += np.int64(s[i]) * np.int64(s[i + k])
        total += c * c
    return total


@numba.njit(cache=True, nogil=True)
def _energies_kernel(batch: np.ndarray, out: np.ndarray) -> bool:  # pragma: no cover - compiled
    """E of every row of an int8 batch into `out`; False (and nothing computed) if a value is not ±1."""
    rows, n = batch.shape
    bad = False  # one branch-free pass first: an early exit inside the main loop slows it down
    for b in range(rows):
        for i in range(n):
            bad |= (batch[b, i] != 1) & (batch[b, i] != -1)
    if bad:
        return False
    for b in range(rows):
        total = np.int64(0)
        for k in range(1, n):
            c = np.int64(0)
            for i in range(n - k):
                c += np.int64(batch[b, i]) * np.int64(batch[b, i + k])
            total += c * c
        out[b] = total
    return True


def _plus_minus_int8(values: Any, ndim: int, what: str) -> np.ndarray:
    """A C-contiguous int8 copy (or view) of an array of ±1 values with `ndim` dimensions.

    Validates before converting (so 257 cannot wrap around to 1); raises ValueError naming the
    first value that is not ±1.
    """
    array = np.asarray(values)
    if array.ndim != ndim:
        raise ValueError(f"{what} must be a {ndim}-D array of ±1 values, got shape {array.shape}")
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{what} must hold the numbers +1 and -1, got dtype {array.dtype}")
    if array.size and not np.all((array == 1) | (array == -1)):
        bad = np.argwhere((array != 1) & (array != -1))[0]
        raise ValueError(f"{what} must hold only +1 and -1; found {array[tuple(bad)]!r} at index {tuple(bad.tolist())}")
    return np.ascontiguousarray(array, dtype=np.int8)


def _is_int8(array: Any, ndim: int) -> bool:
    """Already in the kernels' layout: then the kernels validate the values themselves, in one pass."""
    return (isinstance(array, np.ndarray) and array.dtype == np.int8 and array.ndim == ndim
            and array.flags.c_contiguous)


def energy(seq: np.ndarray) -> int:
    """E(s) = Σ_{k=1}^{N−1} C_k², C_k = Σ_{i=1}^{N−k} s_i·s_{i+k}, for a 1-D array s of ±1 values.

    Exact: integer arithmetic throughout (a compiled O(N²) loop, cached by Numba), so the result
    is the true energy for every N. Fastest for a C-contiguous int8 array; any other numeric
    array or list of ±1 is converted first. Raises ValueError for anything but a 1-D array of ±1.
    """
    s = seq if _is_int8(seq, 1) else _plus_minus_int8(seq, 1, "seq")
    e = int(_energy_kernel(s))
    if e < 0:
        _plus_minus_int8(s, 1, "seq")  # raises, naming the bad value
    return e


def energies(batch: np.ndarray) -> np.ndarray:
    """The energy of every row of a (B, N) array of ±1 values, as an int64 array of shape (B,).

    Same formula and exactness as `energy`; one compiled loop over the whole batch (pass a
    C-contiguous (B, N) int8 array to skip the conversion).
    """
    b = batch if _is_int8(batch, 2) else _plus_minus_int8(batch, 2, "batch")
    out = np.zeros(b.shape[0], dtype=np.int64)
    if not _energies_kernel(b, out):
        _plus_minus_int8(b, 2, "batch")  # raises, naming the bad value
    return out


def merit_factor(n: int, e: int) -> float:
    """F = N²/(2E); infinite only for E = 0, which no sequence with N ≥ 3 reaches."""
    return float("inf") if e == 0 else n * n / (2.0 * e)


# --------------------------------------------------------------------------------------------
# Sequences as text
# --------------------------------------------------------------------------------------------

def sequence_to_string(seq: np.ndarray) -> str:
    """±1 values as '+'/'-' characters."""
    s = _plus_minus_int8(seq, 1, "seq")
    return "".join("+" if v > 0 else "-" for v in s.tolist())


def string_to_sequence(text: str) -> np.ndarray:
    """'+'/'-' characters as an int8 array of ±1 (ValueError on any other character)."""
    bad = _BAD_CHAR.search(text)
    if bad:
        raise ValueError(f"only '+' and '-' are allowed; found {bad.group()!r} at position {bad.start() + 1}")
    codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.where(codes == ord("+"), 1, -1).astype(np.int8)


def _describe_char(c: str) -> str:
    if c in "\r\n":
        return "a line break"
    if c.isspace():
        return f"whitespace {c!r}"
    if c in "−–—‐‑":
        return f"{c!r} (U+{ord(c):04X}; write the ASCII hyphen-minus '-')"
    return repr(c)


class AnswerError(ValueError):
    """The answer does not follow the parse rule; the message says what was wrong."""


def parse_answer(answer: Any, n: int) -> tuple[np.ndarray, str]:
    """(sequence as int8 ±1, where it was read from) or AnswerError; see the module docstring."""
    if not isinstance(answer, str):
        raise AnswerError(f"the answer must be text (str), got {type(answer).__name__}")
    if len(answer) > MAX_ANSWER_CHARS:
        raise AnswerError(f"the answer has {len(answer):,} characters; at most {MAX_ANSWER_CHARS:,} are read. "
                          f"Reply with the {n} characters of '+'/'-' alone or in a fenced block")
    block = last_fenced_block(answer)
    if block is None:
        body, where = answer.strip(), "the answer"
        # Say why an answer with a fence was read whole: its block was never closed.
        note = " (its ``` block is not closed, so the whole answer was read)" if "```" in answer else ""
    else:
        body, where, note = block.strip(), "the last fenced block", ""
    if not body:
        raise AnswerError(f"{where} is empty: expected {n} characters of '+'/'-'{note}")
    bad = _BAD_CHAR.search(body)
    if bad:
        length = "" if len(body) == n else f"; it also has {len(body)} characters instead of {n}"
        raise AnswerError(f"{where} has {_describe_char(bad.group())} at position {bad.start() + 1}: only '+' and '-' "
                          f"are allowed, exactly {n} of them{length}{note}")
    if len(body) != n:
        raise AnswerError(f"expected {n} characters of '+'/'-', got {len(body)} in {where}{note}")
    return string_to_sequence(body), ("fenced block" if block is not None else "whole answer")


# --------------------------------------------------------------------------------------------
# Shipped optima
# --------------------------------------------------------------------------------------------

@cache
def load_table() -> dict[str, Any]:
    """The shipped JSON: `optima` (N = 3..66, proven) and `best_known` (odd N, 67..119)."""
    node = resources.files("ttd_envs.data").joinpath("labs", "optimal_energies.json")
    return json.loads(node.read_text())


def reference_energy(n: int) -> tuple[int | None, bool | None]:
    """(E*, proven): the proven optimum for N ≤ 66, a best-known value (proven=False), or (None, None)."""
    table = load_table()
    if str(n) in table["optima"]:
        return int(table["optima"][str(n)]["energy"]), True
    if str(n) in table["best_known"]:
        return int(table["best_known"][str(n)]["energy"]), False
    return None, None


def reference_sequence(n: int) -> str | None:
    """One shipped sequence reaching `reference_energy(n)`, or None."""
    table = load_table()
    entry = table["optima"].get(str(n)) or table["best_known"].get(str(n))
    return None if entry is None else entry["sequence"]


# --------------------------------------------------------------------------------------------
# The problem
# --------------------------------------------------------------------------------------------

def _construction_string(construction: Any) -> str | None:
    """A State's construction as '+'/'-' text, also accepting a ±1 array; None if unreadable."""
    if construction is None:
        return None
    if isinstance(construction, str):
        return construction if not _BAD_CHAR.search(construction) else None
    try:
        return sequence_to_string(np.asarray(construction))
    except ValueError:
        return None


class LABS:
    """ttd/LABS-v0: one ±1 sequence of length `n`; reward = merit factor N²/(2E).

    Kwargs: `n` (3..256, default 32) and `initial` ("random", drawn from the reset's rng, or
    "all-plus"). `Evaluation.score` is the energy E (lower is better). `details` has
    `energy`, `merit_factor`, `optimal_energy` (the proven E* for N ≤ 66, else the shipped best
    known energy, else None), `optimum_proven`, `gap_to_optimum` (E − that value), `is_optimal`
    (E equals a proven E*), `reaches_reference` and `read_from`. Evaluation runs in the calling
    process and takes microseconds: no sandbox, because the answer is data and is never executed.
    """

    name = "LABS"
    info_keys = ("energy", "merit_factor", "optimal_energy", "optimum_proven", "gap_to_optimum", "is_optimal",
                 "reaches_reference", "read_from")
    summary = "Low-autocorrelation binary sequences: a ±1 sequence of length N with the smallest energy Σ C_k²"

    def __init__(self, n: int = 32, initial: str = "random") -> None:
        try:
            if isinstance(n, bool):
                raise TypeError
            n = operator.index(n)
        except TypeError:
            raise TypeError(f"n must be an integer in {MIN_N}..{MAX_N}, got {n!r}") from None
        if not MIN_N <= n <= MAX_N:
            raise ValueError(f"n must be in {MIN_N}..{MAX_N}, got {n} (N = 1 has no lags and every sequence of "
                             f"N = 2 has E = 1, so there is nothing to discover below {MIN_N})")
        one_of("initial", initial, ("random", "all-plus"))
        self.n = n
        self.initial = initial
        self.optimal_energy, self.optimum_proven = reference_energy(n)
        self.record_instance = {"n": n}  # its row of the record table
        self.record = record_for("LABS", self.record_instance)  # None where the table has no entry for n
        self.defaults = TrainerDefaults(
            model_kind="embedded",
            group_size=16,
            groups_per_step=8,
            steps=40,
            max_new_tokens=n,
            temperature=1.0,
            eval_timeout_s=5.0,
            embedded=EmbeddedSpec(alphabet=ALPHABET, length=n, answer_edits_prompt=True),
        )

    # -- states ----------------------------------------------------------------------------------

    def _scored(self, seq: np.ndarray) -> tuple[int, dict[str, Any]]:
        e = energy(seq)
        ref = self.optimal_energy
        details = {
            "energy": e,
            "merit_factor": merit_factor(self.n, e),
            "optimal_energy": ref,
            "optimum_proven": self.optimum_proven,
            "gap_to_optimum": None if ref is None else e - ref,
            "is_optimal": bool(self.optimum_proven) and e == ref,
            "reaches_reference": ref is not None and e <= ref,
        }
        return e, details

    def exact_score(self, data: Any) -> Bound:
        """The energy is an integer, so the float score is already exact."""
        return Bound.exact(Fraction(self.score_construction(data)))

    def construction_data(self, construction: Any) -> dict[str, Any]:
        return {"sequence": _construction_string(construction)}

    def score_construction(self, data: Any) -> float:
        """The energy of a stored sequence, `{"sequence": "+-..."}`, or of this n's row of the shipped
        optimum table (`{"optima": {n: {"sequence": ...}}, "best_known": ...}`), for `ttd_envs.verify`."""
        if isinstance(data, dict) and "optima" in data:
            data = data["optima"].get(str(self.n)) or data.get("best_known", {}).get(str(self.n))
            if data is None:
                raise InvalidConstruction(f"the optimum table has no sequence of length {self.n}")
        if not isinstance(data, dict) or "sequence" not in data:
            raise InvalidConstruction('expected a JSON object with a "sequence" string of +/- characters')
        text = data["sequence"]
        if isinstance(text, str) and len(text.strip()) != self.n and not _BAD_CHAR.search(text.strip()):
            raise InvalidConstruction(f"the sequence has {len(text.strip())} signs but n = {self.n}; for that "
                                      f"length give --env-arg n={len(text.strip())}")
        try:
            seq, _ = parse_answer(text, self.n)
        except AnswerError as exc:
            raise InvalidConstruction(str(exc)) from None
        return float(energy(seq))

    def initial_state(self, rng: np.random.Generator) -> State:
        if self.initial == "random":
            seq = np.where(rng.integers(0, 2, size=self.n) == 1, 1, -1).astype(np.int8)
        else:
            seq = np.ones(self.n, dtype=np.int8)
        e = energy(seq)
        return State(code=None, reward=merit_factor(self.n, e), score=float(e),
                     construction=sequence_to_string(seq), is_initial=True, metadata={"initial": self.initial})

    def evaluate(self, action: str, state: State) -> Evaluation:
        """Parse the answer (strict rule in the module docstring), then score it.

        No sandbox: the answer is data ('+'/'-' text) and is never executed, so this is plain
        in-process Python plus the compiled energy loop. Never raises because of the answer:
        every malformed input, including non-str, becomes a zero-reward failure with a message.
        """
        try:
            seq, read_from = parse_answer(action, self.n)
        except AnswerError as exc:
            return Evaluation.failure(str(exc))
        except Exception as exc:  # noqa: BLE001 - a defensive net: evaluate must not raise on any input
            return Evaluation.failure(f"the answer could not be read ({type(exc).__name__}: {exc})")
        e, details = self._scored(seq)
        details["read_from"] = read_from
        return Evaluation(reward=merit_factor(self.n, e), valid=True, score=float(e), error=None, code=None,
                          construction=sequence_to_string(seq), details=details)

    # -- prompts ---------------------------------------------------------------------------------

    def reward_for(self, score: float) -> float:
        """The reward of energy `score`: the merit factor N²/(2E)."""
        return merit_factor(self.n, score)

    def drawing(self, construction: Any) -> dict[str, Any] | None:
        """The sequence's aperiodic autocorrelations C_k, k = 1..N-1 (E = sum of their squares)."""
        text = _construction_string(construction)
        if text is None:
            return None
        s = string_to_sequence(text).astype(np.int64)
        c = [int(s[:-k] @ s[k:]) for k in range(1, s.size)]
        return series_drawing(f"{text}: E = {energy(s.astype(np.int8))}, merit factor "
                              f"{merit_factor(s.size, energy(s.astype(np.int8))):.4f}", "shift k", "C_k",
                              series("C_k", range(1, s.size), c, "bar"))

    def compact_prompt(self, state: State) -> str:
        """What the embedded policy sees: the current sequence as '+'/'-' ("" when there is none)."""
        return _construction_string(state.construction) or ""

    def _target_line(self) -> str:
        n, ref = self.n, self.optimal_energy
        if ref is None:
            return (f"No optimum is known to us for N = {n}. Random sequences average E = N(N−1)/2 = "
                    f"{n * (n - 1) // 2}; good sequences reach merit factors around 6 to 9.")
        f = merit_factor(n, ref)
        if self.optimum_proven:
            return f"The minimum for N = {n} is E = {ref} (F = {f:.4f}), proven by Packebusch & Mertens (2016). Reach it."
        return (f"The best known energy for N = {n} is E = {ref} (F = {f:.4f}), from Table 3 of Packebusch & Mertens "
                "(2016); it is not proven optimal. Reach it, or beat it: that would be a new record.")

    def prompt(self, state: State) -> str:
        n = self.n
        parts = [
            f"# {self.summary}",
            (f"Choose a sequence s_1, …, s_N of N = {n} signs, each +1 or −1, whose aperiodic autocorrelations "
             "are all as close to zero as possible."),
            "",
            "## Exact scoring",
            "C_k = Σ_{i=1}^{N−k} s_i·s_{i+k}   for every lag k = 1, …, N−1",
            "E = Σ_{k=1}^{N−1} C_k²   (the energy, an integer; lower is better)",
            "reward = merit factor F = N²/(2E)   (higher is better)",
            ("Reversing the sequence, negating it, or negating every second element leaves E unchanged. A random "
             f"sequence has E = N(N−1)/2 = {n * (n - 1) // 2} on average."),
            "",
            "## Answer format",
            (f"Answer with exactly {n} characters, each '+' (for +1) or '-' (for −1), nothing else. If you write "
             "anything besides the sequence, end with a fenced block that holds only the sequence: a line ```, the "
             "sequence on its own line, then a line ```. The last closed fenced block is read; without one, the "
             "whole answer is. Surrounding whitespace is ignored; any other character (a space, comma, digit, "
             f"second line or Unicode minus) or a length other than {n} makes the answer invalid, with reward 0."),
            "",
            "## Target",
            self._target_line(),
            "",
            "## Current state",
        ]
        current = _construction_string(state.construction)
        if current is None or len(current) != n:
            parts.append("There is no sequence yet: write one from scratch.")
        else:
            e = energy(string_to_sequence(current))  # recomputed: a resumed State's score is not trusted
            parent = "none (this is a starting sequence)" if state.parent_score is None else f"E = {state.parent_score:g}"
            parts += [
                f"Current sequence: E = {e}, F = {merit_factor(n, e):.4f}; its parent: {parent}.",
                current,
                "Write a sequence with a lower energy (flipping a few signs of this one is a fine start).",
            ]
        return "\n".join(parts)
