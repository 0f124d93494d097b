"""What a run should reach: targets (``val_loss<0.01``, ``accuracy=0.85:0.95``) and
milestones (``epoch 20: val_loss < 0.25, red flag > 0.30``), parsed and judged."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..numfmt import sentence as _fmt
from .records import DiagnosisError, Flag


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """``metric`` should reach ``goal``; between ``acceptable`` and ``goal`` is amber."""

    metric: str
    goal: float
    lower_better: bool
    acceptable: float | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        """``val_loss<0.01``, ``accuracy>=0.9``, or a range ``accuracy=0.85:0.95``
        (acceptable 0.85, goal 0.95; for a loss write ``val_loss=0.30:0.25``)."""
        m = re.fullmatch(r"\s*([\w./-]+)\s*(<=|>=|<|>|=)\s*([-+\d.eE]+)(?::([-+\d.eE]+))?\s*", text)
        if not m:
            raise DiagnosisError(
                f"cannot read target {text!r}: write metric<value, metric>value, "
                "or metric=acceptable:goal (e.g. val_loss<0.01, accuracy=0.85:0.95)"
            )
        metric, op, a, b = m.groups()
        try:
            first, second = float(a), (float(b) if b is not None else None)
        except ValueError:
            raise DiagnosisError(f"target {text!r}: {a!r} is not a number") from None
        if op == "=":
            if second is None:
                raise DiagnosisError(
                    f"target {text!r}: '=' needs a range acceptable:goal, e.g. accuracy=0.85:0.95"
                )
            if first == second:
                raise DiagnosisError(f"target {text!r}: acceptable and goal must differ")
            return cls(metric=metric, goal=second, lower_better=second < first, acceptable=first)
        if second is not None:
            raise DiagnosisError(f"target {text!r}: a range goes with '=', e.g. {metric}={a}:{b}")
        return cls(metric=metric, goal=first, lower_better=op.startswith("<"))

    def flag(self, value: float | None) -> Flag:
        if not _finite(value):
            return Flag.RED
        better = (value <= self.goal) if self.lower_better else (value >= self.goal)
        if better:
            return Flag.GREEN
        if self.acceptable is not None:
            ok = (value <= self.acceptable) if self.lower_better else (value >= self.acceptable)
            if ok:
                return Flag.AMBER
        return Flag.RED

    def describe(self, value: float | None) -> str:
        """``final val_loss 0.365 is 36.5x the 0.01 target`` and friends."""
        if not _finite(value):
            return f"{self.metric} is {_fmt(value)}; target {_fmt(self.goal)}"
        if self.lower_better:
            if self.goal > 0 and value > self.goal:
                return (
                    f"{self.metric} {_fmt(value)} is {value / self.goal:.1f}x the "
                    f"{_fmt(self.goal)} target"
                )
            return f"{self.metric} {_fmt(value)} meets the {_fmt(self.goal)} target"
        if value >= self.goal:
            return f"{self.metric} {_fmt(value)} meets the {_fmt(self.goal)} target"
        return (
            f"{self.metric} {_fmt(value)} is {_fmt(self.goal - value)} below the "
            f"{_fmt(self.goal)} target"
        )


# --------------------------------------------------------------------------- milestones


@dataclass(frozen=True)
class Milestone:
    """``epoch 20: val_loss < 0.25, red flag > 0.30``."""

    epoch: int
    metric: str
    expect: str  # "<" or ">"
    expect_value: float
    red_flag: float | None = None

    _PATTERN = re.compile(
        r"\s*epoch\s+(\d+)\s*:\s*(?:expect\s+)?([\w./-]+)\s*([<>])=?\s*([-+\d.eE]+)"
        r"(?:\s*,\s*red\s*flag\s*([<>])=?\s*([-+\d.eE]+))?\s*",
        re.IGNORECASE,
    )

    @classmethod
    def parse(cls, text: str) -> Milestone:
        m = cls._PATTERN.fullmatch(text)
        if not m:
            raise DiagnosisError(
                f"cannot read milestone {text!r}: write "
                "'epoch 20: val_loss < 0.25, red flag > 0.30'"
            )
        epoch, metric, op, value, red_op, red = m.groups()
        if red_op is not None and red_op == op:
            raise DiagnosisError(
                f"milestone {text!r}: the red flag must point the other way from the expectation"
            )
        return cls(
            epoch=int(epoch),
            metric=metric,
            expect=op,
            expect_value=float(value),
            red_flag=float(red) if red is not None else None,
        )

    def judge(self, value: float | None) -> Flag:
        if not _finite(value):
            return Flag.RED
        ok = value < self.expect_value if self.expect == "<" else value > self.expect_value
        if ok:
            return Flag.GREEN
        if self.red_flag is None:
            return Flag.AMBER
        bad = value > self.red_flag if self.expect == "<" else value < self.red_flag
        return Flag.RED if bad else Flag.AMBER


_OPPOSITE = {"<": ">", ">": "<"}


def read_milestones(path: Path) -> list[Milestone]:
    """One milestone per line; blank lines and ``#`` comments are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DiagnosisError(f"cannot read milestones file {path}: {exc.strerror}") from None
    out = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            out.append(Milestone.parse(text))
        except DiagnosisError as exc:
            raise DiagnosisError(f"{path}:{n}: {exc}") from None
    return out
