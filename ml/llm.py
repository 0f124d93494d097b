"""LLM commentary on a run: a bounded prompt, one Messages API call, numbers checked.

``generate_commentary`` turns a run's ``training_results.json`` dict, its diagnosis and its
metric-CSV statistics into ``llm_analysis.md``:

- The prompt (``build_prompt``) is bounded by ``max_chars``: key metrics first, then the
  diagnosis, the configuration, the per-epoch history (first, best, last and every k-th epoch
  when it does not fit) and the CSV statistics. What was shortened is said in the prompt.
- Secrets never reach the prompt: a value whose key names a secret (``api_key``, ``token``,
  ``secret``, ``password``, ``authorization``, ``credential``, ...; any case, any depth) and
  any string that looks like an Anthropic key (``sk-ant-...``) become ``[redacted]``.
- The call goes through the ``anthropic`` SDK, whose own retry (with backoff, honouring
  ``retry-after``) covers 408/409/429/5xx/529 and connection errors. A failure after the
  retries comes back as ``status="failed"`` with a one-line message; no key gives
  ``status="skipped"``. ``generate_commentary`` never raises.
- Every number in the answer is checked against the numbers of the input
  (``verify_numbers``); the ones not found are marked ``[unverified]`` in the file and
  listed at its end.

The API key is only handed to the SDK, which sends it in the request's auth header; it is
never written to the prompt, the file, the returned record, messages or logs.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from .atomic import write_bytes_atomic
from .errors import MLError

log = logging.getLogger(__name__)

ANALYSIS_NAME = "llm_analysis.md"
DEFAULT_MODEL = "claude-sonnet-5-5"
REDACTED = "[redacted]"
UNVERIFIED_MARK = "[unverified]"
MIN_PROMPT_CHARS = 1000

SECTIONS = (
    "## Performance assessment",
    "## Training dynamics",
    "## Architecture insights",
    "## Failure-mode hypotheses",
    "## Improvement suggestions",
    "## Research questions",
)

# List prices in USD per million tokens (input, output), keyed by model id without a date
# suffix (``claude-sonnet-4-5-20250929`` -> ``claude-sonnet-4-5``). Source: Anthropic's
# published pricing (https://www.anthropic.com/pricing). Base rates only: prompt caching,
# batch and long-context (>200k tokens) rates are not modelled, so the cost is an estimate.
# A model not listed here gets "cost unknown" rather than a guess.
MODEL_PRICES_USD_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-opus-5-5": (4.0, 20.0),
    "claude-opus-5": (5.0, 25.0),
    "claude-opus-4-8": (5.0, 25.0),
    "claude-opus-4-7": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4-0": (15.0, 75.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-5-5": (2.0, 10.0),
    "claude-sonnet-5": (2.0, 10.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-0": (3.0, 15.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-fable-5-1": (10.0, 50.0),
    "claude-fable-5": (10.0, 50.0),
    "claude-mythos-5": (10.0, 50.0),
}


class LLMError(MLError):
    """The commentary could not be prepared (e.g. nothing to analyse); says what to do."""


class CommentaryStatus(str, Enum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class Prompt:
    """What is sent: ``system`` and one ``user`` message, at most ``max_chars`` long.

    ``numbers`` are the absolute values of every number in the (scrubbed) input and in the
    user message: the numbers an answer may state. ``truncated`` says what was shortened.
    """

    system: str
    user: str
    numbers: frozenset[float]
    truncated: tuple[str, ...] = ()


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


@dataclass(frozen=True)
class Commentary:
    status: CommentaryStatus
    message: str  # one line, for the terminal
    model: str | None = None  # the model id the API answered with (else the one requested)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    path: Path | None = None  # llm_analysis.md, only when written
    unverified: tuple[UnverifiedNumber, ...] = ()
    verified_count: int = 0


# --------------------------------------------------------------------------- secrets

_SK_ANT = re.compile(r"sk-ant-[A-Za-z0-9_\-]+")
_SECRET_WORDS = {
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "authorization",
    "auth",
    "credential",
    "credentials",
    "apikey",
    "passphrase",
    "cookie",
}
_SECRET_JOINED = ("apikey", "accesskey", "privatekey", "secretkey", "clientsecret")


def _key_words(key: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def _is_secret_key(key: object) -> bool:
    """Whether a mapping key names a secret: ``api_key``, ``ANTHROPIC_API_KEY``, ``authToken``,
    ``db_password``, ``Authorization``, ``aws_secret_access_key``, ... (not ``max_tokens``)."""
    if not isinstance(key, str):
        return False
    words = _key_words(key)
    joined = "".join(words)
    return bool(_SECRET_WORDS.intersection(words)) or any(j in joined for j in _SECRET_JOINED)


def _redact_text(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, REDACTED)
    return _SK_ANT.sub(REDACTED, text)


def scrub_secrets(*, obj: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of ``obj`` with secret-named values and key-like strings replaced by
    ``[redacted]``, at any depth; ``secrets`` are literal strings to remove as well."""
    lits = tuple(s for s in secrets if s)

    def walk(o: Any) -> Any:
        if isinstance(o, Mapping):
            out = {}
            for k, v in o.items():
                key = _redact_text(k, lits) if isinstance(k, str) else k
                out[key] = REDACTED if _is_secret_key(k) and v not in (None, "") else walk(v)
            return out
        if isinstance(o, list | tuple):
            return [walk(v) for v in o]
        if isinstance(o, str):
            return _redact_text(o, lits)
        return o

    return walk(obj)


# --------------------------------------------------------------------------- numbers

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


# --------------------------------------------------------------------------- prompt

_SYSTEM = """\
You are an experienced machine-learning researcher reviewing one training run for its \
author. The user message holds the run's data as plain text in tagged blocks: key metrics, \
an automatic diagnosis, the configuration, the per-epoch history and metric statistics. Some \
blocks may be shortened to fit; the message says where.

Rules:
- Use only numbers that appear in the input. Quote them as written there, or rounded (a \
fraction may be written as a percentage). Never invent a number. Do not compute new figures \
(differences, ratios, averages): any number that is not in the input will be flagged as \
unverified in the report.
- Cite the source of every number in parentheses with its field name as given in the input, \
for example: test accuracy <value> (test_results.accuracy). Name epochs by their 1-based \
number, as in the history table.
- If the input does not support a conclusion, say so instead of guessing. Label hypotheses \
as hypotheses.
- In suggestions, describe changes relative to the current setting (for example "double the \
hidden size") rather than new absolute values.
- Answer in Markdown with exactly these six sections, in this order, each starting with its \
heading line, and nothing before the first heading:
{sections}
- Be concise: short paragraphs or bullet lists; no tables of the whole history."""


def _fmt(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "null"
        return format(v, ".6g")
    if isinstance(v, str):
        return v
    return json.dumps(v, default=str)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _fmt_list(values: Sequence[Any], *, limit: int = 12) -> str:
    if len(values) <= limit:
        return "[" + ", ".join(_fmt_inline(v) for v in values) + "]"
    head, tail = values[: limit - 3], values[-3:]
    return (
        "["
        + ", ".join(_fmt_inline(v) for v in head)
        + f", ... ({len(values) - len(head) - len(tail)} more) ..., "
        + ", ".join(_fmt_inline(v) for v in tail)
        + "]"
    )


def _fmt_inline(v: Any) -> str:
    if _is_scalar(v):
        return _fmt(v)
    if isinstance(v, list | tuple):
        return _fmt_list(list(v))
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_fmt_inline(x)}" for k, x in v.items()) + "}"
    return _fmt(v)


def _flatten(obj: Any, prefix: str) -> list[str]:
    """``a.b.c = value`` lines; lists of scalars on one line (long ones elided)."""
    if isinstance(obj, Mapping):
        lines: list[str] = []
        for k, v in obj.items():
            lines.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return lines
    if isinstance(obj, list | tuple) and obj and all(isinstance(x, Mapping) for x in obj):
        lines = []
        for i, x in enumerate(obj):
            lines.extend(_flatten(x, f"{prefix}[{i}]"))
        return lines
    return [f"{prefix} = {_fmt_inline(obj)}"]


@dataclass(frozen=True)
class _Rendered:
    text: str
    note: str | None = None  # what was shortened, None when complete


def _fit_lines(lines: list[str], budget: int, what: str) -> _Rendered:
    """As many whole lines as fit in ``budget``, saying how many were left out."""
    full = "\n".join(lines)
    if len(full) <= budget:
        return _Rendered(full)
    kept: list[str] = []
    used = 0
    cut = " [... cut]"
    for i, line in enumerate(lines):
        tail = f"[... {len(lines) - i - 1} more {what} omitted to fit the prompt]"
        room = budget - used - 1 - len(tail)
        if len(line) > room:
            if room - len(cut) >= 80:  # a long line: keep its head
                kept.append(line[: room - len(cut)] + cut)
                used += room + 1
            break
        kept.append(line)
        used += len(line) + 1
    omitted = len(lines) - len(kept)
    tail = f"[... {omitted} more {what} omitted to fit the prompt]"
    if len(tail) > budget:
        return _Rendered("", f"{what}: all {len(lines)} omitted")
    if not omitted:  # only the last line was cut short
        return _Rendered("\n".join(kept), f"{what}: a long line cut short")
    note = f"{what}: {omitted} of {len(lines)} omitted"
    if kept and kept[-1].endswith(cut):
        note += ", one cut short"
    return _Rendered("\n".join([*kept, tail]), note)


def _hard_cut(text: str, budget: int, what: str) -> _Rendered:
    if len(text) <= budget:
        return _Rendered(text)
    marker = "\n[... truncated to fit the prompt]"
    return _Rendered(text[: max(0, budget - len(marker))] + marker, f"{what}: cut short")


_HEADLINE = (
    "task",
    "model",
    "parameters",
    "device",
    "num_epochs",
    "best_epoch",
    "best_val_loss",
    "stopped_early",
)
_HISTORY_KEYS = ("train_history", "val_history")
_CONFIG_KEYS = ("model_config", "dataset_info")


def _key_metrics(results: Mapping[str, Any]) -> list[str]:
    lines = [f"{k} = {_fmt_inline(results[k])}" for k in _HEADLINE if k in results]
    test = results.get("test_results")
    if isinstance(test, Mapping):
        order = ["kind", "accuracy", "precision", "recall", "f1", "mse", "mae", "worst_group"]
        keys = [k for k in order if k in test] + [k for k in test if k not in order]
        for k in keys:
            v = test[k]
            if k == "confusion_matrix" and isinstance(v, list):
                lines.append(
                    f"test_results.confusion_matrix = {_fmt_inline(v)} "
                    "(rows = true class, columns = predicted, in class_names order)"
                )
            elif k == "early_decision" and isinstance(v, Mapping):
                for ek, ev in v.items():
                    if ek == "decision_frames" and isinstance(ev, list):
                        lines.append(
                            f"test_results.early_decision.decision_frames = "
                            f"{len(ev)} per-clip values (not shown)"
                        )
                    else:
                        lines.extend(_flatten(ev, f"test_results.early_decision.{ek}"))
            else:
                lines.extend(_flatten(v, f"test_results.{k}"))
    elif test is not None:
        lines.append(f"test_results = {_fmt_inline(test)}")
    timings = results.get("timings")
    if isinstance(timings, Mapping):
        for k, v in timings.items():
            nums = [x for x in v if isinstance(x, int | float)] if isinstance(v, list) else []
            if isinstance(v, list) and nums and len(v) > 6:
                lines.append(
                    f"timings.{k} = {len(v)} values, first {_fmt(v[0])}, last {_fmt(v[-1])}, "
                    f"min {_fmt(min(nums))}, max {_fmt(max(nums))}"
                )
            else:
                lines.extend(_flatten(v, f"timings.{k}"))
    return lines


def _history_table(results: Mapping[str, Any], budget: int) -> _Rendered:
    columns: list[tuple[str, list[Any]]] = []
    for hk in _HISTORY_KEYS:
        hist = results.get(hk)
        if isinstance(hist, Mapping):
            short = hk.split("_")[0]
            for name, series in hist.items():
                if isinstance(series, list):
                    columns.append((f"{short}_{name}", series))
    n = max((len(s) for _, s in columns), default=0)
    if not n:
        return _Rendered("")
    best = results.get("best_epoch")
    best = best if isinstance(best, int) and 1 <= best <= n else None

    def row(e: int) -> str:
        cells = [str(e)] + [_fmt(s[e - 1]) if e - 1 < len(s) else "-" for _, s in columns]
        return " ".join(cells) + ("  <- best epoch" if e == best else "")

    header = " ".join(["epoch"] + [name for name, _ in columns])
    rows = {e: row(e) for e in range(1, n + 1)}

    def render(epochs: list[int]) -> str:
        lines = [header]
        prev = 0
        for e in epochs:
            if e > prev + 1:
                lines.append(f"... ({e - prev - 1} epochs not shown)")
            lines.append(rows[e])
            prev = e
        if prev < n:
            lines.append(f"... ({n - prev} epochs not shown)")
        return "\n".join(lines)

    everything = render(list(range(1, n + 1)))
    if len(everything) <= budget:
        return _Rendered(everything)
    fixed = {1, 2, 3, n - 2, n - 1, n} | ({best - 1, best, best + 1} if best else set())
    fixed = {e for e in fixed if 1 <= e <= n}
    for stride in range(2, n + 1):
        epochs = sorted(fixed | set(range(1, n + 1, stride)))
        text = render(epochs)
        if len(text) <= budget:
            return _Rendered(
                text,
                f"training_history: {len(epochs)} of {n} epochs shown "
                f"(first, best, last and every {stride} epochs)",
            )
    for epochs in (sorted(fixed), sorted({e for e in (1, best, n) if e})):
        text = render(epochs)
        if len(text) <= budget:
            return _Rendered(text, f"training_history: {len(epochs)} of {n} epochs shown")
    return _Rendered("", f"training_history: all {n} epochs omitted")


def _diagnosis_lines(diagnosis: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    lists: list[tuple[str, list[Any]]] = []
    for k, v in diagnosis.items():
        if isinstance(v, list) and any(isinstance(x, str | Mapping | list) for x in v):
            lists.append((k, v))  # findings, recommendations: one bullet each
        elif isinstance(v, Mapping):
            lines.extend(_flatten(v, k))
        else:
            lines.append(f"{k} = {_fmt_inline(v)}")
    for k, items in lists:
        lines.append(f"{k}:")
        for x in items:
            if isinstance(x, Mapping):
                first = [f for f in ("text", "action", "message") if f in x]
                keys = first + [f for f in x if f not in first]
                lines.append("- " + "; ".join(f"{f}: {_fmt_inline(x[f])}" for f in keys))
            else:
                lines.append(f"- {_fmt_inline(x)}")
    return lines


_CSV_PRIORITY = re.compile(r"val|loss|acc|f1|mse|mae|prec|recall", re.I)
_CSV_GROUPS = ("stats", "metrics", "lr_schedule", "steps", "notes", "correlations")


def _csv_lines(summary: Mapping[str, Any]) -> list[str]:
    """Scalars, then per-metric statistics (validation and loss metrics first), the lr
    schedule and the rest: the end is what gets cut when the prompt is short of room."""
    lines: list[str] = [f"{k} = {_fmt_inline(v)}" for k, v in summary.items() if _is_scalar(v)]
    groups = [k for k in _CSV_GROUPS if k in summary]
    groups += [k for k in summary if k not in groups and not _is_scalar(summary[k])]
    for k in groups:
        v = summary[k]
        if isinstance(v, Mapping) and v and all(isinstance(x, Mapping) for x in v.values()):
            rows = [
                (0 if _CSV_PRIORITY.search(str(name)) else 1, f"{k}.{name}: {_stats(stats)}")
                for name, stats in v.items()
            ]
            lines.extend(line for _, line in sorted(rows, key=lambda t: t[0]))  # stable
        else:
            lines.extend(_flatten(v, str(k)))
    return lines


def _stats(stats: Mapping[str, Any]) -> str:
    return ", ".join(f"{s}={_fmt_inline(x)}" for s, x in stats.items() if x is not None)


def build_prompt(
    *,
    results: Mapping[str, Any] | None,
    diagnosis: Mapping[str, Any] | None,
    csv_summary: Mapping[str, Any] | None,
    max_chars: int = 12000,
    secrets: Iterable[str] = (),
) -> Prompt:
    """The bounded, secret-free prompt for one run; ``user`` is at most ``max_chars`` long.

    Blocks, in order of priority: key metrics (test metrics, best epoch, best validation loss,
    epochs, model, parameters), the diagnosis, the configuration, the per-epoch history, the
    CSV statistics and any other fields. Each block gets a share of ``max_chars`` and what
    the earlier ones leave; what was shortened is listed at the end of the message.
    ``secrets`` are literal strings (e.g. the API key) to redact wherever they appear.
    """
    if max_chars < MIN_PROMPT_CHARS:
        raise LLMError(f"max_chars={max_chars} is too small: give at least {MIN_PROMPT_CHARS}")
    if not results and not diagnosis and not csv_summary:
        raise LLMError(
            "nothing to analyse: pass the run's training_results.json, its diagnosis or its "
            "metric-CSV statistics"
        )
    lits = [s for s in secrets if s]
    res = scrub_secrets(obj=dict(results or {}), secrets=lits)
    diag = scrub_secrets(obj=dict(diagnosis or {}), secrets=lits)
    csv = scrub_secrets(obj=dict(csv_summary or {}), secrets=lits)

    handled = set(_HEADLINE) | {"test_results", "timings", *_HISTORY_KEYS, *_CONFIG_KEYS}
    config_lines = [line for k in _CONFIG_KEYS if k in res for line in _flatten(res[k], k)]
    other_lines = [line for k, v in res.items() if k not in handled for line in _flatten(v, str(k))]

    # (tag, share of max_chars, renderer(budget)) in priority order.
    Renderer = Callable[[int], _Rendered]
    blocks: list[tuple[str, float, Renderer]] = []
    if res:
        metrics_text = "\n".join(_key_metrics(res))
        blocks.append(("key_metrics", 1.0, lambda b: _hard_cut(metrics_text, b, "key_metrics")))
    if diag:
        diag_lines = _diagnosis_lines(diag)
        blocks.append(("diagnosis", 0.3, lambda b: _fit_lines(diag_lines, b, "diagnosis lines")))
    if config_lines:
        blocks.append(
            ("configuration", 0.15, lambda b: _fit_lines(config_lines, b, "configuration lines"))
        )
    if any(isinstance(res.get(k), Mapping) for k in _HISTORY_KEYS):
        blocks.append(("training_history", 0.3, lambda b: _history_table(res, b)))
    if csv:
        csv_lines = _csv_lines(csv)
        blocks.append(
            ("metric_csv_statistics", 0.25, lambda b: _fit_lines(csv_lines, b, "CSV lines"))
        )
    if other_lines:
        blocks.append(("other_fields", 0.1, lambda b: _fit_lines(other_lines, b, "other lines")))

    intro = (
        "Analyse this training run. Every number you state must come from the input below; "
        "cite the field it comes from.\n"
    )
    outro_room = min(700, 200 + max_chars // 20)  # the list of what was shortened, last line
    available = max_chars - len(intro) - outro_room
    overhead = {tag: len(f"<{tag}>\n\n</{tag}>\n") for tag, _, _ in blocks}
    rendered: dict[str, _Rendered] = {}
    remaining = available
    for tag, share, render in blocks:
        budget = min(int(max_chars * share), remaining - overhead[tag])
        rendered[tag] = render(max(0, budget))
        remaining -= len(rendered[tag].text) + overhead[tag]
    for tag, _, render in blocks:  # give what is left to the shortened blocks, in order
        if rendered[tag].note and remaining > 0:
            again = render(len(rendered[tag].text) + remaining)
            remaining -= len(again.text) - len(rendered[tag].text)
            rendered[tag] = again

    parts = [intro]
    for tag, _, _ in blocks:
        if rendered[tag].text:
            parts.append(f"<{tag}>\n{rendered[tag].text}\n</{tag}>\n")
    notes = tuple(r.note for r in rendered.values() if r.note)
    if notes:
        shown = "; ".join(notes)
        if len(shown) > outro_room - 150:
            shown = shown[: outro_room - 153] + "..."
        parts.append(f"\nShortened to fit the prompt: {shown}.\n")
    else:
        parts.append("\nNothing was shortened.\n")
    parts.append("Write the six sections now.")
    user = _redact_text("".join(parts), lits)
    system = _SYSTEM.format(sections="\n".join(SECTIONS))

    numbers = _input_numbers(res) | _input_numbers(diag) | _input_numbers(csv)
    numbers |= {m.value for m in extract_numbers(text=user)}
    return Prompt(system=system, user=user, numbers=frozenset(numbers), truncated=notes)


# --------------------------------------------------------------------------- cost


def model_price(*, model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for ``model``, or None when not on file."""
    base = re.sub(r"-\d{8}$", "", model.strip())
    return MODEL_PRICES_USD_PER_MTOK.get(base)


def estimate_cost_usd(*, model: str, input_tokens: int, output_tokens: int) -> float | None:
    price = model_price(model=model)
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1e6


# --------------------------------------------------------------------------- the call


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failure_message(err: BaseException, *, base_url: str, timeout_s: float, retries: int) -> str:
    import anthropic

    tried = f"after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else "no retries"
    if isinstance(err, anthropic.APITimeoutError):
        return (
            f"LLM commentary failed: the API did not answer within {timeout_s:g} s ({tried}); "
            "retry later or raise the timeout"
        )
    if isinstance(err, anthropic.APIConnectionError):
        return (
            f"LLM commentary failed: could not connect to {base_url} ({tried}); check the "
            "network, a proxy, or ANTHROPIC_BASE_URL"
        )
    if isinstance(err, anthropic.APIStatusError):
        status = err.status_code
        detail = getattr(err, "api_message", None) or getattr(err, "type", None) or ""
        detail = f" ({_one_line(detail, 120)})" if detail else ""
        rid = getattr(err, "request_id", None)
        rid = f" [request-id {rid}]" if rid else ""
        head = f"LLM commentary failed: HTTP {status}{detail}{rid}"
        if status == 401:
            return f"{head}: the API key is invalid; check ANTHROPIC_API_KEY (tether doctor)"
        if status == 403:
            return f"{head}: the key may not use this model or API; check its permissions"
        if status == 404:
            return f"{head}: unknown model or endpoint; pass a current model id"
        if status == 400:
            return f"{head}: the request was rejected; check the model id and max_tokens"
        if status == 429:
            return f"{head}: rate limited {tried}; wait a minute and retry"
        if status == 529:
            return f"{head}: the API is overloaded {tried}; retry later"
        if status >= 500:
            return f"{head}: server error {tried}; retry later"
        return f"{head}; retry, or report the request id"
    return f"LLM commentary failed: {type(err).__name__}: {_one_line(err, 120)}"


def _resolve_key(api_key: str | None) -> str | None:
    key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY")
    key = (key or "").strip()
    return key or None


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def generate_commentary(
    *,
    results: Mapping[str, Any] | None = None,
    diagnosis: Mapping[str, Any] | None = None,
    csv_summary: Mapping[str, Any] | None = None,
    out_path: Path,
    model: str = DEFAULT_MODEL,
    api_key: str | None = None,
    base_url: str | None = None,
    max_tokens: int = 2000,
    timeout_s: float = 120.0,
    max_retries: int = 3,
    max_chars: int = 12000,
    clock: Callable[[], datetime] = _utc_now,
) -> Commentary:
    """Ask the model for a commentary on the run and write it to ``out_path``.

    ``out_path`` is the Markdown file, or a directory (an existing one, or a path without a
    suffix) to write ``llm_analysis.md`` into.
    ``api_key`` defaults to ``$ANTHROPIC_API_KEY``; without one nothing is called or written
    and the status is ``skipped``. ``base_url`` defaults to ``$ANTHROPIC_BASE_URL``, else the
    public API. The SDK retries 408/409/429/5xx/529 and connection errors ``max_retries``
    times with backoff, honouring ``retry-after``. Never raises: failures come back as
    ``status="failed"`` with a one-line message saying what to do.
    """
    key = _resolve_key(api_key)
    if key is None:
        return Commentary(
            CommentaryStatus.SKIPPED,
            "LLM commentary skipped: ANTHROPIC_API_KEY is not set; export it to enable --llm",
            model=model,
        )
    secrets = [key]
    out_path = Path(out_path)
    target = out_path / ANALYSIS_NAME if out_path.is_dir() or not out_path.suffix else out_path
    endpoint = base_url or os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"

    def failed(message: str, **kw: Any) -> Commentary:
        message = _redact_text(_one_line(message, 400), secrets)
        log.info("%s", message)
        return Commentary(CommentaryStatus.FAILED, message, **{"model": model, **kw})

    try:
        prompt = build_prompt(
            results=results,
            diagnosis=diagnosis,
            csv_summary=csv_summary,
            max_chars=max_chars,
            secrets=secrets,
        )
    except LLMError as e:
        return failed(f"LLM commentary failed: {e}")
    except Exception as e:  # malformed input must not take the caller down
        return failed(f"LLM commentary failed: could not build the prompt: {type(e).__name__}")

    try:
        import anthropic
    except ImportError:
        return failed("LLM commentary failed: the anthropic package is missing; pip install it")

    try:
        client = anthropic.Anthropic(
            api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout_s
        )
        with client:
            message = client.messages.create(
                model=model,
                max_tokens=max_tokens,
                system=prompt.system,
                messages=[{"role": "user", "content": prompt.user}],
            )
    except Exception as e:
        if not isinstance(e, anthropic.AnthropicError):
            return failed(f"LLM commentary failed: {type(e).__name__}: {_one_line(e, 120)}")
        return failed(
            _failure_message(e, base_url=endpoint, timeout_s=timeout_s, retries=max_retries)
        )

    answered_model = str(getattr(message, "model", None) or model)
    usage = getattr(message, "usage", None)
    in_tok = int(getattr(usage, "input_tokens", 0) or 0)
    out_tok = int(getattr(usage, "output_tokens", 0) or 0)
    cost = estimate_cost_usd(model=answered_model, input_tokens=in_tok, output_tokens=out_tok)
    spent = {
        "model": answered_model,
        "input_tokens": in_tok,
        "output_tokens": out_tok,
        "cost_usd": cost,
    }
    text = "".join(
        getattr(b, "text", "") for b in (message.content or []) if getattr(b, "type", "") == "text"
    ).strip()
    stop = getattr(message, "stop_reason", None)
    if not text:
        return failed(
            f"LLM commentary failed: the API returned no text (stop_reason={stop}); retry, "
            "or try another model",
            **spent,
        )
    text = _redact_text(text, secrets)
    unverified = verify_numbers(answer=text, source_numbers=prompt.numbers)
    total = len(extract_numbers(text=text))
    verified = total - len(unverified)

    doc = _render_markdown(
        answer=text,
        unverified=unverified,
        verified=verified,
        requested_model=model,
        answered_model=answered_model,
        input_tokens=in_tok,
        output_tokens=out_tok,
        cost=cost,
        stop_reason=stop,
        max_tokens=max_tokens,
        truncated=prompt.truncated,
        now=clock(),
    )
    doc = _redact_text(doc, secrets)
    try:
        write_bytes_atomic(target, doc.encode())
    except OSError as e:
        return failed(
            f"LLM commentary failed: could not write {target}: {e.strerror or e}; check that "
            "the directory is writable",
            unverified=tuple(unverified),
            verified_count=verified,
            **spent,
        )
    cost_text = f"~${cost:.4f}" if cost is not None else "cost unknown"
    flagged = f"{len(unverified)} unverified number(s)" if unverified else "all numbers verified"
    msg = (
        f"LLM commentary written to {target} ({answered_model}, {in_tok} in / {out_tok} out "
        f"tokens, {cost_text}; {flagged})"
    )
    log.info("%s", msg)
    return Commentary(
        CommentaryStatus.OK,
        msg,
        path=target,
        unverified=tuple(unverified),
        verified_count=verified,
        **spent,
    )


def _mark_unverified(answer: str, unverified: Sequence[UnverifiedNumber]) -> str:
    out = answer
    for u in sorted(unverified, key=lambda u: u.start, reverse=True):
        out = f"{out[: u.end]} {UNVERIFIED_MARK}{out[u.end :]}"
    return out


def _render_markdown(
    *,
    answer: str,
    unverified: Sequence[UnverifiedNumber],
    verified: int,
    requested_model: str,
    answered_model: str,
    input_tokens: int,
    output_tokens: int,
    cost: float | None,
    stop_reason: str | None,
    max_tokens: int,
    truncated: Sequence[str],
    now: datetime,
) -> str:
    price = model_price(model=answered_model)
    if cost is not None and price is not None:
        cost_line = (
            f"${cost:.4f} (estimate at list price ${price[0]:g} / ${price[1]:g} per million "
            "input / output tokens)"
        )
    else:
        cost_line = f"cost unknown (no price on file for {answered_model})"
    model_line = answered_model
    if requested_model != answered_model:
        model_line += f" (requested {requested_model})"
    total = verified + len(unverified)
    lines = [
        "# LLM commentary",
        "",
        f"- Model: {model_line}",
        f"- Date: {now.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Tokens: {input_tokens} input, {output_tokens} output",
        f"- Cost: {cost_line}",
        f"- Numbers: {verified} of {total} verified against the input; "
        f"{len(unverified)} unverified, marked {UNVERIFIED_MARK}",
    ]
    if stop_reason == "max_tokens":
        lines.append(f"- Cut short: the answer reached max_tokens={max_tokens}; raise it")
    elif stop_reason not in (None, "end_turn", "stop_sequence"):
        lines.append(f"- Stop reason: {stop_reason}")
    missing = [s for s in SECTIONS if s not in answer]
    if missing:
        lines.append("- Sections missing from the answer: " + ", ".join(s[3:] for s in missing))
    if truncated:
        lines.append("- Input shortened for the prompt: " + "; ".join(truncated))
    lines += [
        "",
        "> Written by a language model from this run's results. Every number was checked "
        "against the input; the ones that match nothing are marked "
        f"{UNVERIFIED_MARK}: check them before relying on them.",
        "",
        "---",
        "",
        _mark_unverified(answer, unverified),
        "",
        "---",
        "",
        "## Unverified numbers",
        "",
    ]
    if unverified:
        lines.append(
            "These numbers match no number in the input, even after rounding to the precision "
            "written. They may be derived (a difference, a ratio) or invented."
        )
        lines.append("")
        for u in unverified:
            lines.append(f'- `{u.text}` (line {u.line}): "{u.context}"')
    else:
        lines.append(f"None: all {total} numbers in the commentary were found in the input.")
    return "\n".join(lines) + "\n"
