"""Numbers in a text, and the check of an answer's numbers against the input's.

``extract_numbers`` finds every number stated in a text (integers, decimals, ``12,345``,
``91.2%``, ``3e-4``, ``36.5x``, ``1.2M``, ``45ms``); ``verify_numbers`` lists the numbers of an
answer that no input number supports at the precision they are written with.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NumberMention:
    """A number stated in a text. ``value`` is its absolute value (signs are not checked);
    ``tolerance`` is half a unit of the last digit written; ``percent`` when written as %."""

    text: str
    value: float
    tolerance: float
    percent: bool
    start: int
    end: int
    line: int


@dataclass(frozen=True)
class UnverifiedNumber:
    """A number in the answer that matches no number of the input."""

    text: str  # as written, e.g. "42.7%"
    value: float
    line: int  # 1-based line of the answer
    context: str  # that line, trimmed
    start: int
    end: int


_URL_OR_DATE = re.compile(r"https?://\S+|\b\d{4}-\d{2}-\d{2}(?:[T ][\d:.]+Z?)?\b")
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-*+][ \t]+)?(?:#+[ \t]*)?(\d+)[.)](?=[ \t])", re.M)
_NUMBER = re.compile(
    r"(?<![\w.])"  # not the tail of an identifier (F1, i3d, conv3d) or of a decimal
    r"(?P<mant>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:[eE](?P<exp>[-+\u2212]?\d+))?"
    r"(?!\.?\d)"  # not the head of a version number (1.2.3)
    r"(?P<suffix>%|[A-Za-z\u00d7]+)?"
)
_PERCENT_WORD = re.compile(r"[ \t]*(?:percent|per cent|percentage points?|pp)\b", re.I)
_MULTIPLIERS = {"k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "bn": 1e9}
_UNITS = {
    "x",
    "\u00d7",
    "ms",
    "s",
    "sec",
    "secs",
    "min",
    "mins",
    "h",
    "hr",
    "hrs",
    "px",
    "fps",
    "hz",
    "khz",
    "kb",
    "mb",
    "gb",
    "tb",
    "kib",
    "mib",
    "gib",
    "pp",
}
_ORDINALS = {"st", "nd", "rd", "th"}


def extract_numbers(*, text: str) -> list[NumberMention]:
    """Every number stated in ``text``: integers, decimals, ``12,345``, ``91.2%``, ``3e-4``,
    ``36.5x``, ``1.2M``, ``45ms``. Skipped: list markers and numbered headings (``1.`` at the
    start of a line), ordinals (``3rd``), digits inside identifiers (``F1``, ``i3d``,
    ``ResNet-50``, ``top-1``, ``3D``), version numbers (``1.2.3``), URLs and ISO dates."""
    masked = _URL_OR_DATE.sub(lambda m: " " * len(m.group()), text)
    markers = {m.start(1) for m in _LIST_MARKER.finditer(masked)}
    line_starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    out: list[NumberMention] = []
    for m in _NUMBER.finditer(masked):
        start = m.start()
        if start in markers:
            continue
        if (
            start >= 2
            and masked[start - 1] in "-\u2212"
            and (masked[start - 2].isalpha() or masked[start - 2] == "_")
        ):
            continue  # ResNet-50, top-1, GPT-4
        mant = m.group("mant").replace(",", "")
        exp = int(m.group("exp").replace("\u2212", "-")) if m.group("exp") else 0
        suffix = m.group("suffix") or ""
        end = m.end()
        scale = 1.0
        percent = False
        if suffix == "%":
            percent = True
        elif suffix in _MULTIPLIERS:
            scale = _MULTIPLIERS[suffix]
        elif suffix.lower() in _ORDINALS:
            continue
        elif suffix and suffix.lower() not in _UNITS:
            continue  # an identifier such as 3D or 2x2conv
        if not percent:
            pw = _PERCENT_WORD.match(masked, end)
            if pw:
                percent = True
        decimals = len(mant.split(".")[1]) if "." in mant else 0
        value = abs(float(mant)) * 10.0**exp * scale
        tolerance = 0.5 * 10.0 ** (exp - decimals) * scale
        line = bisect.bisect_right(line_starts, start)
        out.append(NumberMention(text[start:end], value, tolerance, percent, start, end, line))
    return out


def _source_values(source_numbers: Iterable[float | int | str]) -> list[float]:
    values: set[float] = set()
    for n in source_numbers:
        if isinstance(n, bool):
            continue
        if isinstance(n, str):
            values.update(m.value for m in extract_numbers(text=n))
            continue
        try:
            f = abs(float(n))
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            values.add(f)
    return sorted(values)


def _supported(sorted_values: list[float], value: float, tolerance: float) -> bool:
    slack = tolerance * (1 + 1e-9) + 1e-12 * max(1.0, value)
    i = bisect.bisect_left(sorted_values, value - slack)
    return i < len(sorted_values) and sorted_values[i] <= value + slack


def verify_numbers(
    *, answer: str, source_numbers: Iterable[float | int | str]
) -> list[UnverifiedNumber]:
    """The numbers in ``answer`` that no input number supports.

    A stated number is supported when some input number rounds to it at the precision it is
    written with (``0.9123`` supports ``0.912``, ``0.91`` and ``1``; ``12,345`` supports
    ``12k``); a number written as a percentage (``91.2%``, ``91 percent``) is also supported
    by an input fraction times 100 (``0.9123``). Signs are ignored. Nothing is derived: a
    difference or a ratio (``36.5x``) is supported only when the input states it, so derived
    figures are flagged for a human to check. With many input numbers, short numbers
    (``0.3``) are easily supported: the check catches invented figures, not every error.
    ``source_numbers`` may hold strings, whose numbers are extracted.
    """
    values = _source_values(source_numbers)
    lines = answer.splitlines()
    out = []
    for m in extract_numbers(text=answer):
        if _supported(values, m.value, m.tolerance):
            continue
        if m.percent and _supported(values, m.value / 100, m.tolerance / 100):
            continue
        context = lines[m.line - 1].strip() if m.line - 1 < len(lines) else ""
        if len(context) > 160:
            context = context[:157] + "..."
        out.append(UnverifiedNumber(m.text, m.value, m.line, context, m.start, m.end))
    return out


def _input_numbers(obj: Any) -> set[float]:
    """Every number of a JSON-like object: values, and numbers written in keys and strings."""
    found: set[float] = set()

    def walk(o: Any) -> None:
        if isinstance(o, bool) or o is None:
            return
        if isinstance(o, int | float):
            if math.isfinite(o):
                found.add(abs(float(o)))
        elif isinstance(o, str):
            found.update(m.value for m in extract_numbers(text=o))
        elif isinstance(o, Mapping):
            for k, v in o.items():
                walk(k)
                walk(v)
        elif isinstance(o, list | tuple):
            for v in o:
                walk(v)

    walk(obj)
    return found
