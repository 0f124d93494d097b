"""How tether writes numbers in text: one module, one named rule for each place a number shows.

The rules differ on purpose, each for its reader:

- ``sentence(v)``: a measured value in a finding or a recommendation ("val_loss 0.365 is
  36.5x the 0.01 target"): 4 significant digits, one decimal from 100 up, 3 significant
  digits below 0.01; ``None`` as ``None``, NaN as ``NaN``.
- ``label(v)``: a value on a figure (legends, titles, bar labels): 4 significant digits from
  1 to 1e5, 3 decimals from 0.001 to 1, else 3 significant digits; NaN/inf spelled out.
- ``sig(v, digits=4)``: a statistic in a table or a summary line: ``digits`` significant
  digits; ``None`` as ``n/a``.
- ``sig_grouped(v, digits=4)``: as ``sig``, but from 1000 up a whole number with thousands
  separators ("12,346"): the report's tables.
- ``step(v)``: a step, a count or a span of steps: whole numbers without a decimal point,
  others in their shortest form ("1500", "0.5").
- ``signed_pct(v, digits=1)``: a change in percent with its sign ("+12.5%").
- ``fraction_pct(v, digits=2)``: a fraction as a percentage ("91.23%").
- ``prompt_value(v)``: a value in an LLM prompt, spelled as JSON spells it (``null``,
  ``true``, 6 significant digits; NaN/inf as ``null``).
"""

from __future__ import annotations

import json
import math
from typing import Any

NA = "n/a"


def nonfinite(v: float) -> str:
    """``NaN``, ``inf`` or ``-inf`` for a value that is not finite."""
    return "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def sentence(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "NaN" if v is not None and math.isnan(v) else str(v)
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.1f}"
    if abs(v) >= 0.01:
        return f"{v:.4g}"
    return f"{v:.3g}"


def label(v: float) -> str:
    if not math.isfinite(v):
        return nonfinite(v)
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e5:
        return f"{v:.4g}" if abs(v) >= 1 else f"{v:.3f}"
    return f"{v:.3g}"


def sig(v: float | None, digits: int = 4) -> str:
    return NA if v is None else f"{v:.{digits}g}"


def metric_value(v: Any) -> str:
    """A reported value in a line of text (metrics in PROGRESS.txt, `tether events`): a float
    to 4 significant digits, anything else as it is."""
    return sig(v) if isinstance(v, float) else str(v)


def sig_grouped(v: float | None, digits: int = 4) -> str:
    if v is None:
        return NA
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"


def step(v: float | None) -> str:
    if v is None:
        return NA
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def signed_pct(v: float, digits: int = 1) -> str:
    return f"{v:+.{digits}f}%"


def fraction_pct(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}%}"


def prompt_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format(v, ".6g") if math.isfinite(v) else "null"
    if isinstance(v, str):
        return v
    return json.dumps(v, default=str)
