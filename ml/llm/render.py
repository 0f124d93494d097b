"""``llm_analysis.md``: the answer with its unverified numbers marked, under a header that says
which model wrote it, what it cost and how many of its numbers were checked, and above the
list of the numbers that match nothing in the input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from .numbers import UnverifiedNumber
from .prices import model_price
from .prompt import SECTIONS

UNVERIFIED_MARK = "[unverified]"


@dataclass(frozen=True)
class CallRecord:
    """What the API call was and what came back, for the file's header."""

    requested_model: str
    answered_model: str
    input_tokens: int
    output_tokens: int
    cost: float | None
    stop_reason: str | None
    max_tokens: int
    truncated: Sequence[str]
    now: datetime


def _mark_unverified(answer: str, unverified: Sequence[UnverifiedNumber]) -> str:
    out = answer
    for u in sorted(unverified, key=lambda u: u.start, reverse=True):
        out = f"{out[: u.end]} {UNVERIFIED_MARK}{out[u.end :]}"
    return out


def render_markdown(
    *, answer: str, unverified: Sequence[UnverifiedNumber], verified: int, call: CallRecord
) -> str:
    """The whole file: header, the marked answer, the unverified numbers."""
    total = verified + len(unverified)
    lines = _header(call=call, answer=answer, verified=verified, unverified=len(unverified))
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


def _header(*, call: CallRecord, answer: str, verified: int, unverified: int) -> list[str]:
    price = model_price(model=call.answered_model)
    if call.cost is not None and price is not None:
        cost_line = (
            f"${call.cost:.4f} (estimate at list price ${price[0]:g} / ${price[1]:g} per "
            "million input / output tokens)"
        )
    else:
        cost_line = f"cost unknown (no price on file for {call.answered_model})"
    model_line = call.answered_model
    if call.requested_model != call.answered_model:
        model_line += f" (requested {call.requested_model})"
    lines = [
        "# LLM commentary",
        "",
        f"- Model: {model_line}",
        f"- Date: {call.now.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Tokens: {call.input_tokens} input, {call.output_tokens} output",
        f"- Cost: {cost_line}",
        f"- Numbers: {verified} of {verified + unverified} verified against the input; "
        f"{unverified} unverified, marked {UNVERIFIED_MARK}",
    ]
    if call.stop_reason == "max_tokens":
        lines.append(f"- Cut short: the answer reached max_tokens={call.max_tokens}; raise it")
    elif call.stop_reason not in (None, "end_turn", "stop_sequence"):
        lines.append(f"- Stop reason: {call.stop_reason}")
    missing = [s for s in SECTIONS if s not in answer]
    if missing:
        lines.append("- Sections missing from the answer: " + ", ".join(s[3:] for s in missing))
    if call.truncated:
        lines.append("- Input shortened for the prompt: " + "; ".join(call.truncated))
    return lines
