"""The prompt: bounded by ``max_chars``, secret-free, and the numbers an answer may state.

Key metrics first, then the diagnosis, the configuration, the per-epoch history and the CSV
statistics (``blocks``); each block gets a share of ``max_chars`` and what the earlier ones
leave, and what was shortened is said at the end of the message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import MLError
from .blocks import (
    _CONFIG_KEYS,
    _HEADLINE,
    _HISTORY_KEYS,
    _csv_lines,
    _diagnosis_lines,
    _fit_lines,
    _flatten,
    _hard_cut,
    _history_table,
    _key_metrics,
    _Rendered,
)
from .numbers import _input_numbers, extract_numbers
from .redact import _redact_text, scrub_secrets

MIN_PROMPT_CHARS = 1000

SECTIONS = (
    "## Performance assessment",
    "## Training dynamics",
    "## Architecture insights",
    "## Failure-mode hypotheses",
    "## Improvement suggestions",
    "## Research questions",
)


class LLMError(MLError):
    """The commentary could not be prepared (e.g. nothing to analyse); says what to do."""


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


# (tag, share of max_chars, renderer(budget)) in priority order.
Renderer = Callable[[int], _Rendered]
Block = tuple[str, float, Renderer]
_INTRO = (
    "Analyse this training run. Every number you state must come from the input below; "
    "cite the field it comes from.\n"
)


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

    blocks = _blocks(res, diag, csv)
    outro_room = min(700, 200 + max_chars // 20)  # the list of what was shortened, last line
    rendered = _fit_blocks(
        blocks, max_chars=max_chars, available=max_chars - len(_INTRO) - outro_room
    )
    parts = [_INTRO]
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


def _blocks(res: Mapping[str, Any], diag: Mapping[str, Any], csv: Mapping[str, Any]) -> list[Block]:
    """The blocks the input has, in priority order, each with its share of the budget."""
    handled = set(_HEADLINE) | {"test_results", "timings", *_HISTORY_KEYS, *_CONFIG_KEYS}
    config_lines = [line for k in _CONFIG_KEYS if k in res for line in _flatten(res[k], k)]
    other_lines = [line for k, v in res.items() if k not in handled for line in _flatten(v, str(k))]

    blocks: list[Block] = []
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
    return blocks


def _fit_blocks(blocks: list[Block], *, max_chars: int, available: int) -> dict[str, _Rendered]:
    """Each block rendered within its share (and what is left); then what is still left goes
    to the shortened blocks, in order."""
    overhead = {tag: len(f"<{tag}>\n\n</{tag}>\n") for tag, _, _ in blocks}
    rendered: dict[str, _Rendered] = {}
    remaining = available
    for tag, share, render in blocks:
        budget = min(int(max_chars * share), remaining - overhead[tag])
        rendered[tag] = render(max(0, budget))
        remaining -= len(rendered[tag].text) + overhead[tag]
    for tag, _, render in blocks:
        if rendered[tag].note and remaining > 0:
            again = render(len(rendered[tag].text) + remaining)
            remaining -= len(again.text) - len(rendered[tag].text)
            rendered[tag] = again
    return rendered
