"""Load TOML into pydantic models with errors that name the file, the line and the key.

``tomllib`` reports syntax errors with a line; pydantic reports a key path
(``profiles.gpu.dashboard_port``) but no line. ``locate`` maps a key path back to the line
that sets it, in nested tables, inline tables and the n-th ``[[array]]`` entry alike, so every
error reads ``tether.toml:12: profiles.gpu.dashboard_port: <what is wrong>``, one line per
error, with a suggestion for a misspelt key and never a dump of the input.

A field typed ``Annotated[dict, Table(SomeDataclass)]`` is validated as ``SomeDataclass``
(its errors keep their key paths) but stays the plain dict the file gave.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, GetCoreSchemaHandler, ValidationError
from pydantic_core import core_schema

from .errors import ConfigValueError, MLError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib


class TomlConfigError(MLError):
    """A TOML file is missing, malformed or does not match its model."""


M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]

_PART = r"""[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*'"""
_DOTTED = rf"(?:{_PART})(?:\s*\.\s*(?:{_PART}))*"
_HEADER = re.compile(rf"^\s*\[\[?\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEY_LINE = re.compile(rf"^\s*({_DOTTED})\s*=")
_AT = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


@dataclasses.dataclass(frozen=True)
class Table:
    """``Annotated[dict, Table(Model)]``: validate a table as ``Model`` (a dataclass or a
    pydantic model), keep the dict. Errors inside keep their paths (``train.extractor.size``).

    ``partial`` maps a table that is only part of a ``Model`` (an override laid over another
    table) to one that validates on its own, e.g. by filling a required key the other table
    gives; the dict kept is the table as written."""

    model: type
    partial: Any = None  # Callable[[dict], dict] | None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def keep(value: Any, validate: core_schema.ValidatorFunctionWrapHandler) -> Any:
            try:
                whole = self.partial(value) if self.partial and isinstance(value, dict) else value
                checked = validate(whole)
            except MLError as exc:  # a nested config raised something that is no ValueError
                raise ValueError(str(exc)) from None
            return value if isinstance(value, dict) else dataclasses.asdict(checked)

        return core_schema.no_info_wrap_validator_function(
            keep,
            handler.generate_schema(self.model),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda v: v),
        )


def load_model(
    path: Path,
    model: type[M],
    *,
    what: str,
    error: type[Exception] = TomlConfigError,
    hint: str | None = None,
) -> M:
    """Parse ``path`` as TOML and validate it as ``model``; ``error`` names file and line.

    ``hint`` (the next step for the user) is passed to ``error`` when given."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} not found: {path} (check the path)") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    return parse_model(text, model, source=str(path), error=error, hint=hint)


def parse_model(
    text: str,
    model: type[M],
    *,
    source: str,
    error: type[Exception] = TomlConfigError,
    hint: str | None = None,
) -> M:
    def fail(message: str) -> Exception:
        return error(message, hint=hint) if hint else error(message)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise fail(syntax_error_line(exc, text=text, source=source)) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = error_lines(exc, model=model, data=data, text=text, source=source)
        raise fail("\n".join(lines)) from None


def syntax_error_line(exc: tomllib.TOMLDecodeError, *, text: str, source: str) -> str:
    """``file:LINE: not valid TOML: <reason> (column C)`` from tomllib's message."""
    message = str(exc)
    m = _AT.search(message)
    reason = message[: m.start()] if m else message
    if m and m.group(1):
        return f"{source}:{m.group(1)}: not valid TOML: {reason} (column {m.group(2)})"
    line = max(1, len(text.splitlines()))
    return f"{source}:{line}: not valid TOML: {reason} (at the end of the file)"


def error_lines(
    exc: ValidationError, *, model: type, data: object, source: str, text: str | None = None
) -> list[str]:
    """One ``source:LINE: dotted.key: message`` per error, in line order (no line when
    ``text`` is None)."""
    out = []
    for err in exc.errors():
        loc, msg = _describe(err, model=model, data=data)
        line = (locate(text, loc) or 1) if text is not None else 0
        where = f"{source}:{line}" if text is not None else source
        out.append((line, f"{where}: {dotted(loc)}: {msg}"))
    return [entry for _, entry in sorted(out, key=lambda item: item[0])]


def dotted(loc: Loc) -> str:
    """``("stages", 1, "num_gpus")`` -> ``stages[1].num_gpus``; odd keys are quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part)
            out += f".{name}" if out else name
    return out or "(top level)"


def _describe(err: Any, *, model: type, data: object) -> tuple[Loc, str]:
    loc = _data_path(data, tuple(err["loc"]))
    kind, msg = err["type"], err["msg"]
    ctx = err.get("ctx") or {}
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = str(ctx.get("discriminator", "kind")).strip("'\"")
        choices = ", ".join(_tags(_type_at(model, data, loc), field))
        loc = (*loc, field)
        if "tag" not in ctx:
            return loc, f"Field required: set {field} to one of: {choices}"
        return loc, f"must be one of: {choices} (got {ctx['tag']!r})"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return loc, "unknown key" + _suggest(str(loc[-1]), _known_keys(model, data, loc[:-1]))
    if kind in ("missing", "missing_argument"):
        return loc, "Field required"
    keyed = isinstance(ctx.get("error"), ConfigValueError)  # its message says what was wrong
    if keyed:
        loc = (*loc, *ctx["error"].key)  # the field a config's own check is about
    if kind in ("value_error", "assertion_error"):
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    found, value = _at(data, loc)
    if found and not keyed and _short(value) and not _shown(value, msg):
        msg = f"{msg} (got {value!r})"
    return loc, msg


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if known and len(known) <= 24:
        return f"; known keys: {', '.join(known)}"
    return ""


def _short(value: object) -> bool:
    if isinstance(value, str):
        return len(value) <= 40 and "\n" not in value
    return isinstance(value, (bool, int, float))


def _shown(value: object, msg: str) -> bool:
    """Whether ``msg`` already says what the value was."""
    return (
        "(got " in msg
        or (isinstance(value, str) and repr(value) in msg)
        or msg.startswith(f"{value} ")
    )


def _at(data: object, loc: Loc) -> tuple[bool, object]:
    node = data
    for part in loc:
        if not _has(node, part):
            return False, None
        node = node[part]  # type: ignore[index]
    return True, node


def _has(node: object, part: str | int) -> bool:
    if isinstance(node, list):
        return isinstance(part, int) and 0 <= part < len(node)
    return isinstance(node, dict) and part in node


def _data_path(data: object, loc: Loc) -> Loc:
    """``loc`` without the parts pydantic adds that are not keys (union discriminator tags)."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if _has(node, part):
            node = node[part]  # type: ignore[index]
        elif not last:
            continue  # e.g. the tag 'ssh' in ('profiles', 'gpu', 'ssh', 'port')
        out.append(part)
    return tuple(out)


# -- the keys a table may have, for "did you mean" ---------------------------------------------


def _known_keys(model: type, data: object, loc: Loc) -> list[str]:
    """Field names of the table at ``loc`` inside ``model`` (empty when not a known table)."""
    fields = _fields(_resolve(_type_at(model, data, loc), _at(data, loc)[1]))
    return sorted(fields or ())


def _type_at(model: type, data: object, loc: Loc) -> Any:
    """The declared type of the value at ``loc`` (None when unknown)."""
    tp: Any = model
    node = data
    for part in loc:
        tp = _child(_resolve(tp, node), part)
        node = _at(node, (part,))[1]
        if tp is None:
            return None
    return tp


def _tags(tp: Any, field: str) -> list[str]:
    """The values a discriminated union's ``field`` may take (``local, ssh``)."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    tags = []
    for member in get_args(tp) if get_origin(tp) in (Union, types.UnionType) else ():
        ftype = (_fields(member) or {}).get(field)
        ftype = get_args(ftype)[0] if get_origin(ftype) is Annotated else ftype
        tags += [str(t) for t in get_args(ftype)] if get_origin(ftype) is Literal else []
    return tags


def _resolve(tp: Any, node: object) -> Any:
    """``tp`` without Annotated, Optional and unions (the member ``node`` fits)."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            base, *meta = get_args(tp)
            tables = [m for m in meta if isinstance(m, Table)]
            tp = tables[0].model if tables else base
        elif origin in (Union, types.UnionType):
            members = [m for m in get_args(tp) if m is not type(None)]
            fitting = [m for m in members if _fits(m, node)]
            if not fitting:
                return None
            tp = fitting[0]
        else:
            return tp


def _fits(tp: Any, node: object) -> bool:
    """Whether a dict ``node`` can be ``tp``: every Literal field it sets has a listed value."""
    fields = _fields(tp)
    if fields is None or not isinstance(node, dict):
        return fields is None and not isinstance(node, dict)
    for name, ftype in fields.items():
        ftype = get_args(ftype)[0] if get_origin(ftype) is Annotated else ftype
        if get_origin(ftype) is Literal and name in node and node[name] not in get_args(ftype):
            return False
    return True


def _child(tp: Any, part: str | int) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if isinstance(part, int):
        return args[0] if origin in (list, tuple, set, frozenset) and args else None
    if origin is dict:
        return args[1] if len(args) == 2 else None
    return (_fields(tp) or {}).get(part)


def _fields(tp: Any) -> dict[str, Any] | None:
    """name -> annotation of a pydantic model's or a dataclass's fields; None for others."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return {
            name: Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
            for name, f in tp.model_fields.items()
        }
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(tp)}
    return None


# -- key path -> line ---------------------------------------------------------------------------


def _parts(dotted_key: str) -> list[str]:
    return [p.strip("\"'") for p in re.findall(_PART, dotted_key)]


def _code_lines(text: str) -> list[str]:
    """The lines of ``text``, those inside multi-line strings blanked (they set no keys)."""
    out, quote = [], None
    for line in text.splitlines():
        out.append("" if quote else line)
        for q in ('"""', "'''"):
            if (quote in (None, q)) and line.count(q) % 2:
                quote = None if quote else q
    return out


def locate(text: str, loc: Loc) -> int | None:
    """Best line (1-based) in ``text`` for the key path ``loc``; None when not found.

    An integer after a name picks that entry of an array of tables: ``("stages", 1,
    "num_gpus")`` is the key in the second ``[[stages]]`` block. A key inside an inline table
    (``extractor = { name = "i3d" }``) is placed on the line that sets the inline table.
    """
    lines = _code_lines(text)
    keys = [str(p) for p in loc if not isinstance(p, int)]
    entry: dict[int, int] = {}  # number of names before the int -> that int
    for i, part in enumerate(loc):
        if isinstance(part, int):
            entry.setdefault(sum(not isinstance(p, int) for p in loc[:i]), part)
    best: int | None = None
    for depth in range(len(keys), -1, -1):
        table, rest = keys[:depth], keys[depth:]
        start, end = _table_span(lines, table, entry.get(depth, 0))
        if start is None:
            continue
        if not rest:
            return start + 1 if table else best
        first = start + 1 if table else 0
        hit, score = None, 0
        for i in range(first, end):
            m = _KEY_LINE.match(lines[i])
            if not m:
                continue
            parts = _parts(m.group(1))
            n = 0
            while n < min(len(parts), len(rest)) and parts[n] == rest[n]:
                n += 1
            if n > score and n in (len(parts), len(rest)):
                hit, score = i, n
        if hit is not None:
            return hit + 1
        if table and best is None:
            best = start + 1
    return best


def _table_span(lines: list[str], table: list[str], entry: int = 0) -> tuple[int | None, int]:
    """(header line index, end index) of the ``entry``-th ``[table]`` / ``[[table]]``; the top
    level is table ``[]`` (start 0)."""
    matches = ((i, _HEADER.match(line)) for i, line in enumerate(lines))
    headers = [(i, _parts(m.group(1))) for i, m in matches if m]
    if not table:
        return 0, headers[0][0] if headers else len(lines)
    seen = -1
    for n, (i, name) in enumerate(headers):
        if name == table:
            seen += 1
            if seen == entry:
                end = next((j for j, _ in headers[n + 1 :]), len(lines))
                return i, end
    return None, len(lines)
