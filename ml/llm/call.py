"""The call: one Messages API request through the ``anthropic`` SDK, and its failure messages.

The SDK's own retry (with backoff, honouring ``retry-after``) covers 408/409/429/5xx/529 and
connection errors. A failure after the retries comes back as ``status="failed"`` with a
one-line message that says what to do; no key gives ``status="skipped"``.
``generate_commentary`` never raises. The API key is only handed to the SDK, which sends it in
the request's auth header; it is never written to the prompt, the file, the returned record,
messages or logs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from ..atomic import write_bytes_atomic
from .numbers import UnverifiedNumber, extract_numbers, verify_numbers
from .prices import estimate_cost_usd
from .prompt import LLMError, Prompt, build_prompt
from .redact import _redact_text
from .render import CallRecord, render_markdown

log = logging.getLogger("tether.ml.llm")

ANALYSIS_NAME = "llm_analysis.md"
DEFAULT_MODEL = "claude-sonnet-5-5"


class CommentaryStatus(str, Enum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"


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


@dataclass(frozen=True)
class _Request:
    """One call's settings; ``endpoint`` is the URL that failure messages name."""

    key: str
    model: str
    base_url: str | None
    endpoint: str
    max_tokens: int
    timeout_s: float
    max_retries: int


class _Failed(Exception):
    """A step of ``generate_commentary`` failed; ``message`` is the one line to return."""

    def __init__(self, message: str, **record: Any) -> None:
        super().__init__(message)
        self.message = message
        self.record = record


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
    out_path = Path(out_path)
    target = out_path / ANALYSIS_NAME if out_path.is_dir() or not out_path.suffix else out_path
    request = _Request(
        key=key,
        model=model,
        base_url=base_url,
        endpoint=base_url or os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com",
        max_tokens=max_tokens,
        timeout_s=timeout_s,
        max_retries=max_retries,
    )
    try:
        prompt = _prompt(results, diagnosis, csv_summary, max_chars=max_chars, secrets=[key])
        message = _ask(request, prompt)
        return _write(request, prompt, message, target=target, now=clock())
    except _Failed as failure:
        text = _redact_text(_one_line(failure.message, 400), [key])
        log.info("%s", text)
        return Commentary(CommentaryStatus.FAILED, text, **{"model": model, **failure.record})


def _prompt(
    results: Mapping[str, Any] | None,
    diagnosis: Mapping[str, Any] | None,
    csv_summary: Mapping[str, Any] | None,
    *,
    max_chars: int,
    secrets: list[str],
) -> Prompt:
    try:
        return build_prompt(
            results=results,
            diagnosis=diagnosis,
            csv_summary=csv_summary,
            max_chars=max_chars,
            secrets=secrets,
        )
    except LLMError as e:
        raise _Failed(f"LLM commentary failed: {e}") from None
    except Exception as e:  # malformed input must not take the caller down
        raise _Failed(
            f"LLM commentary failed: could not build the prompt: {type(e).__name__}"
        ) from None


def _ask(request: _Request, prompt: Prompt) -> Any:
    """The API's message for the prompt (the SDK retries what can be retried)."""
    try:
        import anthropic
    except ImportError:
        raise _Failed(
            "LLM commentary failed: the anthropic package is missing; pip install it"
        ) from None
    try:
        client = anthropic.Anthropic(
            api_key=request.key,
            base_url=request.base_url,
            max_retries=request.max_retries,
            timeout=request.timeout_s,
        )
        with client:
            return client.messages.create(
                model=request.model,
                max_tokens=request.max_tokens,
                system=prompt.system,
                messages=[{"role": "user", "content": prompt.user}],
            )
    except Exception as e:
        if not isinstance(e, anthropic.AnthropicError):
            raise _Failed(
                f"LLM commentary failed: {type(e).__name__}: {_one_line(e, 120)}"
            ) from None
        raise _Failed(
            _failure_message(
                e,
                base_url=request.endpoint,
                timeout_s=request.timeout_s,
                retries=request.max_retries,
            )
        ) from None


def _write(
    request: _Request, prompt: Prompt, message: Any, *, target: Path, now: datetime
) -> Commentary:
    """Check the answer's numbers, write ``target`` and say what came of it."""
    answered_model = str(getattr(message, "model", None) or request.model)
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
        raise _Failed(
            f"LLM commentary failed: the API returned no text (stop_reason={stop}); retry, "
            "or try another model",
            **spent,
        )
    secrets = [request.key]
    text = _redact_text(text, secrets)
    unverified = verify_numbers(answer=text, source_numbers=prompt.numbers)
    verified = len(extract_numbers(text=text)) - len(unverified)
    call = CallRecord(
        requested_model=request.model,
        answered_model=answered_model,
        input_tokens=in_tok,
        output_tokens=out_tok,
        cost=cost,
        stop_reason=stop,
        max_tokens=request.max_tokens,
        truncated=prompt.truncated,
        now=now,
    )
    doc = render_markdown(answer=text, unverified=unverified, verified=verified, call=call)
    try:
        write_bytes_atomic(target, _redact_text(doc, secrets).encode())
    except OSError as e:
        raise _Failed(
            f"LLM commentary failed: could not write {target}: {e.strerror or e}; check that "
            "the directory is writable",
            unverified=tuple(unverified),
            verified_count=verified,
            **spent,
        ) from None
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
