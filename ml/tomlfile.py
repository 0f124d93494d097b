"""Load TOML into pydantic models with errors that name the file and line.

``tomllib`` reports syntax errors with a line; pydantic reports a key path
(``profiles.gpu.dashboard_port``) but no line. ``locate`` maps a key path back to the
line that sets it, so every config error reads ``tether.toml:12: profiles.gpu.port: ...``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

import tomllib
from pydantic import BaseModel, ValidationError

from .errors import MLError


class TomlConfigError(MLError):
    """A TOML file is missing, malformed or does not match its model."""


M = TypeVar("M", bound=BaseModel)

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _key_pattern(key: str) -> re.Pattern[str]:
    quoted = re.escape(key)
    return re.compile(rf'^\s*(?:{quoted}|"{quoted}"|\'{quoted}\')\s*=')


def locate(text: str, loc: tuple[str | int, ...]) -> int | None:
    """Best line (1-based) in ``text`` for the key path ``loc``; None when not found.

    An integer after a name picks that occurrence of an array of tables: ``("stages", 1,
    "num_gpus")`` is the key in the second ``[[stages]]`` block.
    """
    lines = text.splitlines()
    # Split loc into (table path, occurrence) segments and the trailing keys.
    parts = list(loc)
    best: int | None = None
    for depth in range(len(parts), -1, -1):
        head, rest = parts[:depth], [str(p) for p in parts[depth:] if not isinstance(p, int)]
        if head and isinstance(head[-1], int):
            table, occurrence = (
                ".".join(str(p) for p in head[:-1] if not isinstance(p, int)),
                head[-1],
            )
        else:
            table, occurrence = ".".join(str(p) for p in head if not isinstance(p, int)), 0
        start, end = _table_span(lines, table, occurrence)
        if start is None:
            continue
        if not rest:
            return start + 1 if table else None
        pat = _key_pattern(rest[0])
        dotted = _key_pattern(".".join(rest))
        for i in range(start + (1 if table else 0), end):
            if dotted.match(lines[i]) or pat.match(lines[i]):
                return i + 1
        if table and best is None:
            best = start + 1
    return best


def _table_span(lines: list[str], table: str, occurrence: int = 0) -> tuple[int | None, int]:
    """(header line index, end index) of the ``occurrence``-th ``[table]`` / ``[[table]]``;
    the top level is table ''."""
    if table == "":
        for i, line in enumerate(lines):
            if _HEADER.match(line):
                return 0, i
        return 0, len(lines)
    seen = -1
    start: int | None = None
    for i, line in enumerate(lines):
        m = _HEADER.match(line)
        if not m:
            continue
        if start is not None:
            return start, i
        name = ".".join(p.strip().strip("\"'") for p in m.group(1).split("."))
        if name == table:
            seen += 1
            if seen == occurrence:
                start = i
    return start, len(lines)


def load_model(
    path: Path, model: type[M], *, what: str, error: type[Exception] = TomlConfigError
) -> M:
    """Parse ``path`` as TOML and validate it as ``model``; ``error`` names file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} not found: {path} (check the path)") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    return parse_model(text, model, source=str(path), error=error)


def parse_model(
    text: str, model: type[M], *, source: str, error: type[Exception] = TomlConfigError
) -> M:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: not valid TOML: {exc} (fix the TOML syntax at that line)") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(_format(exc, data=data, text=text, source=source)) from None


def _data_path(data: object, loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """``loc`` without the parts pydantic adds that are not keys (union discriminator tags)."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            node = node[part]
        elif not last:
            continue  # e.g. the tag 'ssh' in ('profiles', 'gpu', 'ssh', 'port')
        out.append(part)
    return tuple(out)


def _format(exc: ValidationError, *, data: object, text: str, source: str) -> str:
    out = []
    for err in exc.errors():
        loc = _data_path(data, tuple(err["loc"]))
        msg = err["msg"]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            ctx = err.get("ctx", {})
            loc = (*loc, str(ctx.get("discriminator", "kind")).strip("'\""))
            choices = str(ctx.get("expected_tags", "")).replace("'", "")
            got = f"got {ctx['tag']!r}" if "tag" in ctx else "missing"
            msg = f"must be one of: {choices} ({got})"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/configuration.md)"
        elif err["type"] == "value_error":
            msg = f"{msg.removeprefix('Value error, ')} (got {err['input']!r})"
        elif "input" in err and err["type"] != "missing":
            msg = f"{msg} (got {err['input']!r})"
        line = locate(text, loc)
        where = f"{source}:{line}" if line else source
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        out.append(f"{where}: {dotted}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(out)
