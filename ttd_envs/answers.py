"""Final answers of math solutions: extraction, canonical form, equivalence, majority vote.

The pipeline every TTRL component shares, so that the vote and the reward can never disagree:

1. `extract_answer(text)`: the content of the *last* ``\\boxed{...}`` (braces balanced). An
   optional fallback (``fallback="last_number"``) takes the last number in the text; it is off by
   default because it turns rambling, unfinished responses into votes.
2. `canonicalize(answer)`: a cheap string normal form that already puts most equivalent answers
   in one bin: LaTeX noise, ``\\text{}``, units, degrees, ``%``, ``$`` and "x =" prefixes removed;
   numbers, decimals, fractions and mixed numbers become an exact reduced rational ("025" -> "25",
   "142.0" -> "142", "\\frac{1}{2}" and "0.5" -> "1/2"); tuples, intervals and matrices are
   canonicalised element by element; an unbracketed list ("1,-2") is a set and is sorted.
3. `AnswerJudge.vote_key(answer)`: the canonical form plus, for symbolic answers, a numeric
   *fingerprint* (its free symbols and its value, computed with sympy at points each judge draws
   in secret, see `secret_points`). Two answers are equivalent when their keys are equal, so "\\frac{3\\sqrt{3}}{4}"
   and "\\frac{3}{4}\\sqrt{3}" share one bin. Sympy runs in a worker process under a wall-clock
   limit and a memory limit, behind a cheap guard that refuses exponent towers outright, so a
   hostile answer such as ``9^{9^{9^{9}}}`` costs milliseconds, and a slow one at most the limit.
4. `AnswerJudge.vote(answers)`: missing answers (None) are never votes; they still count in the
   majority ratio's denominator. Ties go to the bin whose first member came first in sample order
   (the reference code's rule, made explicit). No answer at all gives label None, ratio 0.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

logger = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 1000
"""Longer 'answers' are kept as raw strings: never parsed, never evaluated, never cached."""
CACHE_ENTRIES = 100_000
"""The judge's key cache is emptied when it reaches this many answers (at most ~100 MB)."""

# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _braced(text: str, open_index: int, end: int | None = None) -> tuple[str, int] | None:
    """Content of the brace group opening at `open_index` and the index after it; None if it is
    not closed before `end` (default: the end of the text)."""
    depth = 0
    for i in range(open_index, len(text) if end is None else end):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1:i], i + 1
    return None


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces, else None.

    Linear time: when a box is unbalanced, any earlier box that is still usable must close before
    it, so each earlier candidate is scanned only up to the failed one (in place: no copies).
    """
    starts = sorted(m.end() - 1 for cmd in _BOX_COMMANDS for m in re.finditer(re.escape(cmd) + r"\s*\{", text))
    limit = len(text)
    for brace in reversed(starts):
        group = _braced(text, brace, limit)
        if group is not None:
            return group[0]
        limit = brace
    return None


def extract_answer(text: str, fallback: Literal["none", "last_number"] = "none") -> str | None:
    """The final answer of a response, or None when it has none (None is never a vote).

    `fallback="last_number"` returns the last number in the text when there is no usable box.
    """
    if fallback not in ("none", "last_number"):
        raise ValueError(f"fallback must be 'none' or 'last_number', got {fallback!r}")
    boxed = extract_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    if fallback == "last_number":
        numbers = _NUMBER_RE.findall(text)
        if numbers:
            return numbers[-1].replace(",", "")
    return None


# ---------------------------------------------------------------------------------------------
# Canonical form
# ---------------------------------------------------------------------------------------------

_TEXT_COMMANDS = ("\\text", "\\textbf", "\\textit", "\\textrm", "\\mbox", "\\mathrm", "\\mathbf", "\\operatorname")
_NOISE = (
    ("\\displaystyle", ""), ("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", " "), ("\\;", " "),
    ("\\:", " "), ("\\ ", " "), ("~", " "), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"),
    ("^{\\circ}", ""), ("^\\circ", ""), ("\\circ", ""), ("°", ""), ("\\%", ""), ("%", ""), ("\\$", ""),
    ("$", ""), ("\\le ", "\\leq "), ("\\ge ", "\\geq "), ("\\infty", "\\infty "),
)
_UNITS = (
    "degrees", "degree", "cm", "centimeters", "m", "meters", "km", "mm", "inches", "inch", "in", "feet",
    "foot", "ft", "yards", "miles", "mph", "units", "unit", "sq", "square", "cents", "cent", "dollars",
    "dollar", "seconds", "second", "minutes", "minute", "hours", "hour", "days", "day", "years", "year",
    "percent", "pounds", "lbs", "grams", "kg", "liters", "ml", "points", "ways", "people", "students",
)
_UNIT_RE = re.compile(r"^(.*?\d)\s*(?:\\)?(?:" + "|".join(_UNITS) + r")(?:\s*\^\s*\{?[23]\}?)?\s*\.?$")
_PREFIX_RE = re.compile(r"^\s*[A-Za-z](?:_\{?\w\}?)?\s*(?:=|\\in)\s*(?=\S)")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_DECIMAL_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")
_FRACTION_RE = re.compile(r"^([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}$")
_MIXED_RE = re.compile(r"^([+-]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")
_SLASH_RE = re.compile(r"^([+-]?\d+)/([+-]?\d+)$")
_CHOICE_RE = re.compile(r"^\(([A-Ea-e])\)$")
_MATRIX_RE = re.compile(r"^\\begin\{([pbv]?matrix)\}(.*)\\end\{\1\}$", re.DOTALL)


def _unwrap_commands(s: str, commands: Sequence[str]) -> str:
    """Replace ``\\cmd{content}`` by ``content`` for each command (balanced braces)."""
    changed = True
    while changed:
        changed = False
        for cmd in commands:
            for m in re.finditer(re.escape(cmd) + r"(?![A-Za-z])\s*\{", s):
                group = _braced(s, m.end() - 1)
                if group is None:
                    continue
                s = s[:m.start()] + group[0] + s[group[1]:]
                changed = True
                break
    return s


def _split_top_level(s: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside any (), [], {} nesting."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def _exact_number(s: str) -> Fraction | None:
    """An exact rational for integer, decimal, \\frac{a}{b}, a/b and mixed-number ("1\\frac{4}{5}") forms."""
    try:
        if _DECIMAL_RE.match(s):
            return Fraction(s)
        if m := _FRACTION_RE.match(s):
            value = Fraction(int(m.group(2)), int(m.group(3)))
            return -value if m.group(1) == "-" else value
        if m := _MIXED_RE.match(s):
            value = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
            return -value if m.group(1) == "-" else value
        if m := _SLASH_RE.match(s):
            return Fraction(int(m.group(1)), int(m.group(2)))
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _format_number(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _squeeze(s: str) -> str:
    """Remove whitespace, keeping one space where it ends a LaTeX command before a letter (\\cot x)."""
    s = re.sub(r"(\\[A-Za-z]+)\s+(?=[A-Za-z0-9])", r"\1" + "\x00", s)
    return re.sub(r"\s+", "", s).replace("\x00", " ")


def _canonical_atom(s: str) -> str:
    """Canonical form of one element (no top-level list structure)."""
    s = s.strip().rstrip(".").strip()
    if m := _UNIT_RE.match(s):
        s = m.group(1)
    s = _squeeze(s)
    # \frac12, \frac9{19}, \frac{270}7, \sqrt2 -> braced forms
    s = re.sub(r"\\frac ?(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac ?(\d)\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt ?(\d)", r"\\sqrt{\1}", s)
    s = re.sub(r"_\{(\w+)\}", r"_\1", s)
    if s.startswith("+"):
        s = s[1:]
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    number = _exact_number(s)
    if number is not None:
        return _format_number(number)
    if m := _CHOICE_RE.match(s):
        return m.group(1).upper()
    if len(s) >= 2 and s.isalpha():
        return s.lower()  # a word answer such as "Evelyn" or "east"
    return s


def canonicalize(answer: str | None) -> str | None:
    """A normal form that maps equivalent written forms to one string; None for no answer."""
    if answer is None:
        return None
    s = answer.strip()
    if not s:
        return None
    if len(s) > MAX_ANSWER_CHARS:
        return s
    boxed = extract_boxed(s)
    if boxed is not None and s.startswith(("\\boxed", "\\fbox")):
        s = boxed
    s = s.replace("\\\\", "\x01")  # matrix row separators survive the noise removal below
    for old, new in _NOISE:
        s = s.replace(old, new)
    s = _unwrap_commands(s, _TEXT_COMMANDS)
    s = _PREFIX_RE.sub("", s, count=1).strip()
    if m := _MATRIX_RE.match(s.strip()):
        rows = [r for r in m.group(2).split("\x01") if r.strip()]
        cells = ["(" + ",".join(_canonical_atom(c) for c in row.split("&")) + ")" for row in rows]
        return "matrix(" + ",".join(cells) + ")"
    s = s.replace("\x01", "\\\\").strip().rstrip(".").strip()
    if _THOUSANDS_RE.match(_squeeze(s)):
        return _canonical_atom(s)
    opens, closes = ("(", "[", "\\{"), (")", "]", "\\}")
    for o in opens:
        if s.startswith(o) and s.endswith(closes) and _matching_close(s, o):
            inner = s[len(o):len(s) - (2 if s.endswith("\\}") else 1)]
            parts = _split_top_level(inner)
            close = "\\}" if s.endswith("\\}") else s[-1]
            if len(parts) > 1 or o != "(":
                items = [_canonical_atom(p) for p in parts]
                if o == "\\{":
                    items = sorted(items)
                return o + ",".join(items) + close
    parts = _split_top_level(s)
    if len(parts) > 1 and all(p.strip() for p in parts):
        return ",".join(sorted(_canonical_atom(p) for p in parts))
    return _canonical_atom(s)


def _matching_close(s: str, opener: str) -> bool:
    """True when the opener at position 0 is closed only by the last character (one group)."""
    depth = 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0 and i < len(s) - 1:
                return False
    return True


# ---------------------------------------------------------------------------------------------
# Symbolic fingerprints (sympy in a worker process, under limits)
# ---------------------------------------------------------------------------------------------

_FUNCTIONS = {"sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "arcsin", "arccos",
              "arctan", "pi", "oo"}
_SOURCE_CHARS = re.compile(r"^[0-9A-Za-z+\-*/().,\s]*$")
_MAX_SOURCE_CHARS = 300
_MAX_DIGITS = 40
POINT_COUNT = 2


def secret_points() -> tuple[complex, ...]:
    """Evaluation points for free symbols, drawn afresh by each judge from the OS's randomness.

    Complex, so even functions do not collide. Secret, because with points a model can know (they
    used to be constants in this file) an answer such as 7 + (x - p1)(x - p2) takes the value of
    the label 7 at every point and is judged correct. Honest answers do not depend on the points:
    equivalent expressions agree everywhere, others differ at all but a measure-zero set.
    """
    draw = secrets.SystemRandom()
    return tuple(complex(round(draw.uniform(0.3, 1.5), 10), round(draw.choice((-1, 1)) * draw.uniform(0.1, 0.3), 10))
                 for _ in range(POINT_COUNT))


def latex_to_source(latex: str) -> str | None:
    """Translate a canonical LaTeX atom into a whitelisted sympy source string, or None.

    Only digits, single-letter symbols, the names in `_FUNCTIONS` and arithmetic survive, so the
    string is safe to hand to sympy's parser. Exponent towers and huge literals are refused here.
    """
    s = latex
    for old, new in (("\\cdot", "*"), ("\\times", "*"), ("\\div", "/"), ("\\pi", " pi "), ("\\infty", " oo "),
                     ("\\ln", " log "), ("\\log", " log "), ("\\exp", " exp ")):
        s = s.replace(old, new)
    for fn in ("sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan"):
        s = s.replace("\\" + fn, f" {fn} ")
    s = _replace_frac_sqrt(s)
    if s is None:
        return None
    s = s.replace("{", "(").replace("}", ")").replace("^", "**")
    if "\\" in s or not _SOURCE_CHARS.match(s) or len(s) > _MAX_SOURCE_CHARS or "," in s:
        return None
    if re.search(r"\d{%d,}" % (_MAX_DIGITS + 1), s) or _exponent_tower(s):
        return None
    words = re.findall(r"[A-Za-z]+", s)
    for w in words:
        if w not in _FUNCTIONS and len(w) > 1:
            s = re.sub(r"\b%s\b" % w, "*".join(w), s)  # "xy" is x*y
    return s


def _exponent_tower(source: str) -> bool:
    """True when some exponent itself contains an exponent (e.g. 9**(9**9)), which sympy may not finish."""
    for m in re.finditer(r"\*\*", source):
        rest = source[m.end():].lstrip()
        if rest.startswith("("):
            depth, j = 0, 0
            for j, c in enumerate(rest):
                depth += c == "("
                depth -= c == ")"
                if depth == 0:
                    break
            exponent = rest[:j + 1]
        else:
            exponent = re.match(r"[\w.]*", rest).group(0)
            if rest[len(exponent):].lstrip().startswith("**"):
                return True
        if "**" in exponent:
            return True
    return False


def _replace_frac_sqrt(s: str) -> str | None:
    """\\frac{a}{b} -> ((a)/(b)); \\sqrt{a} -> sqrt(a); \\sqrt[n]{a} -> ((a)**(1/(n)))."""
    for _ in range(50):
        m = re.search(r"\\(frac|sqrt)", s)
        if m is None:
            return s
        i = m.end()
        if m.group(1) == "frac":
            first = _braced(s, i) if i < len(s) and s[i] == "{" else None
            second = _braced(s, first[1]) if first and first[1] < len(s) and s[first[1]] == "{" else None
            if second is None:
                return None
            s = s[:m.start()] + f"(({first[0]})/({second[0]}))" + s[second[1]:]
        else:
            index = None
            if i < len(s) and s[i] == "[":
                close = s.find("]", i)
                if close < 0:
                    return None
                index, i = s[i + 1:close], close + 1
            group = _braced(s, i) if i < len(s) and s[i] == "{" else None
            if group is None:
                return None
            body = f"sqrt({group[0]})" if index is None else f"(({group[0]})**(1/({index})))"
            s = s[:m.start()] + body + s[group[1]:]
    return None


def _evaluate_source(source: str, points: list[list[float]]) -> dict[str, Any] | None:
    """Runs in the worker: the expression's free symbols and its value at each point (None if not
    a number). The symbols are part of the answer's key, so an expression in x never equals a number."""
    import sympy
    from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application,
                                            parse_expr, standard_transformations)

    names = {c: sympy.Symbol(c) for c in "abcdefghjklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    names.update({"I": sympy.I, "i": sympy.I, "pi": sympy.pi, "oo": sympy.oo, "e": sympy.E, "ln": sympy.log,
                  "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan})
    transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
    expr = parse_expr(source, local_dict=names, global_dict={"__builtins__": {}, **{
        n: getattr(sympy, n) for n in ("Integer", "Float", "Rational", "Symbol", "Function", "sqrt", "sin", "cos",
                                       "tan", "cot", "sec", "csc", "log", "exp")}}, transformations=transformations)
    if not isinstance(expr, sympy.Expr):
        return None
    symbols = expr.free_symbols  # each symbol's point depends on its name, so x+1 and y+1 differ
    values = []
    for k, point in enumerate(complex(*p) for p in points):
        subs = {}
        for sym in symbols:
            z = point * (1 + 0.0137 * sum(ord(c) * 7 ** n for n, c in enumerate(sym.name)) + 0.11 * k)
            subs[sym] = sympy.Rational(str(round(z.real, 10))) + sympy.I * sympy.Rational(str(round(z.imag, 10)))
        value = complex(expr.subs(subs).evalf(30))
        if not (math.isfinite(value.real) and math.isfinite(value.imag)):
            return None
        values.append((value.real, value.imag))
    return {"symbols": sorted(sym.name for sym in symbols), "values": values}


def _serve(memory_bytes: int) -> None:
    """Worker loop (this file run as a script): JSON lines in, fingerprints (or null) out."""
    import json
    import resource
    import sys

    try:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    except (ValueError, OSError):  # pragma: no cover - platform without RLIMIT_AS
        pass
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the protocol stream
    for line in sys.stdin:
        try:
            request = json.loads(line)
            result = _evaluate_source(request["source"], request["points"])
        except BaseException:  # noqa: BLE001 - any failure of sympy on hostile input means "no value"
            result = None
        out.write(json.dumps(result) + "\n")
        out.flush()


class _SymbolicWorker:
    """One persistent sympy process; killed and restarted when a request passes the time limit.

    It is a fresh interpreter running this file (not a fork and not multiprocessing-spawn), so it
    neither inherits a multi-threaded parent nor re-imports the caller's `__main__`.
    """

    def __init__(self, timeout_s: float, memory_bytes: int, points: tuple[complex, ...]) -> None:
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self.points = [[p.real, p.imag] for p in points]
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    def _start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", str(self.memory_bytes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=5)
            for stream in (self._process.stdin, self._process.stdout):
                if stream is not None:
                    stream.close()
        self._process = None

    def evaluate(self, source: str, timeout_s: float) -> tuple[tuple[str, ...], tuple[tuple[float, float], ...]] | None:
        """(free symbols, values at the points) of `source`, or None if it has no value or took
        longer than `timeout_s`."""
        with self._lock:
            self._ensure_started()
            return self._request(source, timeout_s)

    def _ensure_started(self) -> None:
        """Start the worker if needed; importing sympy gets its own generous limit, not the request's."""
        if self._process is None or self._process.poll() is not None:
            self._start()
            self._request("1", 30.0)
            if self._process is None:
                self._start()

    def _request(self, source: str, timeout: float) -> tuple[tuple[str, ...], tuple[tuple[float, float], ...]] | None:
        """Send one source and wait at most `timeout` s; on a timeout the worker is killed."""
        assert self._process is not None and self._process.stdin and self._process.stdout
        try:
            self._process.stdin.write(json.dumps({"source": source, "points": self.points}) + "\n")
            self._process.stdin.flush()
            ready, _, _ = select.select([self._process.stdout], [], [], timeout)
            if ready:
                line = self._process.stdout.readline()
                if line:
                    result = json.loads(line)
                    if result is None:
                        return None
                    return tuple(result["symbols"]), tuple(tuple(v) for v in result["values"])
        except (OSError, ValueError):
            pass
        logger.info("symbolic check of %r passed its %.1f s limit or failed; worker restarted", source[:80], timeout)
        self.stop()
        return None

    def warm_up(self) -> None:
        """Start the worker and import sympy now, so later limits measure only the work."""
        with self._lock:
            self._ensure_started()

# ---------------------------------------------------------------------------------------------
# Judge: keys, equivalence, vote
# ---------------------------------------------------------------------------------------------

VoteKey = tuple[str, Any]


@dataclass(frozen=True)
class Vote:
    """The outcome of a majority vote over N answers (None = no answer extracted)."""

    label: str | None
    """The winning answer as first written in the samples (None when no sample had an answer)."""
    label_key: VoteKey | None
    count: int
    ratio: float
    """count / N, N counting missing answers too."""
    keys: tuple[VoteKey | None, ...]
    """Each sample's vote key (None for no answer)."""
    rewards: tuple[float, ...]
    """1.0 for each sample in the winning bin, else 0.0 (always 0.0 for no answer)."""
    bins: int
    """How many distinct answers took part."""


class AnswerJudge:
    """Equivalence of final answers, with caches and a sympy worker under a time limit.

    Thread-safe; one judge per env (or trainer) process. `timeout_s` bounds one symbolic
    evaluation; `memory_bytes` bounds the worker's address space.
    """

    def __init__(self, timeout_s: float = 2.0, memory_bytes: int = 1 << 30, symbolic: bool = True) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.symbolic = symbolic
        self._worker = _SymbolicWorker(timeout_s, memory_bytes, secret_points())
        self._cache: dict[str, VoteKey] = {}  # canonical forms of at most MAX_ANSWER_CHARS
        self._lock = threading.Lock()

    @property
    def timeout_s(self) -> float:
        return self._worker.timeout_s

    def close(self) -> None:
        self._worker.stop()

    def warm_up(self) -> None:
        if self.symbolic:
            self._worker.warm_up()

    def vote_key(self, answer: str | None) -> VoteKey | None:
        """The bin of an answer: equal keys <=> equivalent answers. None for no answer."""
        canonical = canonicalize(answer)
        if canonical is None:
            return None
        with self._lock:
            cached = self._cache.get(canonical)
        if cached is not None:
            return cached
        key = self._compute_key(canonical)
        if len(canonical) <= MAX_ANSWER_CHARS:
            with self._lock:
                if len(self._cache) >= CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[canonical] = key
        return key

    def _compute_key(self, canonical: str) -> VoteKey:
        if not self.symbolic or len(canonical) > MAX_ANSWER_CHARS:
            number = _exact_number(canonical)
            return ("value", _exact_value(number)) if number is not None else ("text", canonical)
        value = self._value(canonical, time.monotonic() + self.timeout_s)
        return ("text", canonical) if value is None else ("value", value)

    def _value(self, canonical: str, deadline: float) -> Any:
        """A hashable value for a canonical answer (nested for structures), or None if not computable.
        All symbolic work on one answer shares one `timeout_s` budget that ends at `deadline`: a set
        of 60 expressions that each run sympy to the limit would otherwise cost minutes."""
        number = _exact_number(canonical)
        if number is not None:
            return _exact_value(number)
        if canonical in ("\\infty", "+\\infty", "-\\infty"):
            return ("infinity", -1 if canonical.startswith("-") else 1)
        if canonical.isalpha() and len(canonical) > 1:
            return None  # a word, not a product of symbols: "evelyn" must not equal "evenly"
        union = _split_top_level_word(canonical, "\\cup")
        if len(union) > 1:
            parts = [self._value(part, deadline) for part in union]
            return None if None in parts else ("union", tuple(sorted(parts, key=repr)))
        if canonical.count("\\pm") == 1 and "," not in canonical:
            canonical = "set:" + ",".join(_expand_pm(canonical))
        structure, items = _structure(canonical.removeprefix("set:"))
        if canonical.startswith("set:"):
            structure = "set"
        if not structure:
            source = latex_to_source(canonical)
            left = deadline - time.monotonic()
            fingerprint = self._worker.evaluate(source, left) if source is not None and left > 0 else None
            if fingerprint is None:
                return None
            symbols, values = fingerprint
            rounded = tuple(_rounded(complex(*v)) for v in values)
            return ("in", symbols, rounded) if symbols else rounded
        if structure == "set":
            items = [x for item in items for x in _expand_pm(item)]
        values = [self._value(item, deadline) for item in items]
        if None in values:
            return None
        if structure == "set":
            values.sort(key=repr)
        return (structure, tuple(values))

    def equivalent(self, a: str | None, b: str | None) -> bool:
        """True when both answers exist and fall in the same vote bin."""
        ka, kb = self.vote_key(a), self.vote_key(b)
        return ka is not None and ka == kb

    def vote(self, answers: Sequence[str | None]) -> Vote:
        """Majority vote; ties go to the answer seen first in sample order; None never votes."""
        keys = tuple(self.vote_key(a) for a in answers)
        counts: dict[VoteKey, int] = {}
        first: dict[VoteKey, int] = {}
        for i, key in enumerate(keys):
            if key is None:
                continue
            counts[key] = counts.get(key, 0) + 1
            first.setdefault(key, i)
        n = len(answers)
        if not counts:
            return Vote(None, None, 0, 0.0, keys, tuple(0.0 for _ in answers), 0)
        winner = min(counts, key=lambda k: (-counts[k], first[k]))
        rewards = tuple(1.0 if k == winner else 0.0 for k in keys)
        label = answers[first[winner]]
        return Vote(label, winner, counts[winner], counts[winner] / n, keys, rewards, len(counts))

    def rewards_against(self, answers: Sequence[str | None], label: str | None) -> tuple[float, ...]:
        """1.0 where an answer is equivalent to `label` (e.g. the true answer), else 0.0."""
        target = self.vote_key(label)
        return tuple(1.0 if target is not None and self.vote_key(a) == target else 0.0 for a in answers)


def _exact_value(number: Fraction) -> Any:
    """The fingerprint of a rational: its value at every evaluation point (it has no symbols).

    Rationals beyond float precision keep an exact key, so two huge integers never merge.
    """
    if abs(number.numerator) >= 10**12 or number.denominator >= 10**12:
        return ("exact", number.numerator, number.denominator)
    return tuple(_rounded(complex(number)) for _ in range(POINT_COUNT))


def _expand_pm(item: str) -> list[str]:
    """'1\\pm\\sqrt{5}' -> ['1+\\sqrt{5}', '1-\\sqrt{5}'] (one \\pm only; others are left alone)."""
    if item.count("\\pm") != 1:
        return [item]
    return [item.replace("\\pm", "+"), item.replace("\\pm", "-")]


def _split_top_level_word(s: str, word: str) -> list[str]:
    """Split on a LaTeX word such as \\cup outside any bracket nesting."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(word, i):
            parts.append(s[start:i])
            start = i + len(word)
            i = start
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _rounded(value: complex) -> tuple[float, float]:
    """Round to 12 significant digits so float noise does not split a bin (1.41421356 is not sqrt 2)."""
    def r(x: float) -> float:
        return 0.0 if abs(x) < 1e-12 else float(f"{x:.12g}")
    return (r(value.real), r(value.imag))


def _structure(canonical: str) -> tuple[str, list[str]]:
    """('', [atom]) for a single atom; ('(', [...]) etc. for tuples/intervals; ('set', [...]) for lists."""
    if canonical.startswith("matrix("):
        rows = _split_top_level(canonical[len("matrix("):-1])
        return "matrix" + str([len(_split_top_level(r[1:-1])) for r in rows]), [
            c for r in rows for c in _split_top_level(r[1:-1])]
    for o, c in (("(", ")"), ("(", "]"), ("[", ")"), ("[", "]"), ("\\{", "\\}")):
        if canonical.startswith(o) and canonical.endswith(c) and _matching_close(canonical, o):
            inner = canonical[len(o):len(canonical) - len(c)]
            parts = _split_top_level(inner)
            if len(parts) > 1 or o != "(":
                return ("set" if o == "\\{" else o + c), parts
    parts = _split_top_level(canonical)
    if len(parts) > 1:
        return "set", parts
    return "", [canonical]


if __name__ == "__main__":
    _serve(int(sys.argv[sys.argv.index("--serve") + 1]))
