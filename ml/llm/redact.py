"""Secrets never reach the prompt: redaction of secret-named values and key-like strings.

A value whose key names a secret (``api_key``, ``token``, ``secret``, ``password``,
``authorization``, ``credential``, ...; any case, any depth) and any string that looks like an
Anthropic key (``sk-ant-...``) become ``[redacted]``; so do the literal strings given (the
API key in use).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

REDACTED = "[redacted]"

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
