"""How tether prints: every message, path, branch name and log line reaches the terminal
literally, and tables fit the terminal's width.

rich reads ``[...]`` as markup and ``:name:`` as an emoji code, so a hint like ``add
[profiles.gpu]`` or a log line like ``[epoch 3] loss=0.1`` would lose text. The console made
here turns both off (and highlighting); styled pieces are ``Text`` objects, never markup
strings, so even a plain ``Console`` prints them literally.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text


def make_console(
    *, stderr: bool = False, file: IO[str] | None = None, width: int | None = None
) -> Console:
    """A console that prints strings as they are: no markup, no emoji codes, no highlighting."""
    return Console(
        stderr=stderr,
        file=file,
        width=width,
        markup=False,
        emoji=False,
        highlight=False,
        soft_wrap=True,
    )


def styled(*parts: str | tuple[str, str]) -> Text:
    """Literal text with styled pieces: ``styled(("error:", "bold red"), " ", message)``."""
    return Text.assemble(*parts)


def write_raw(text: str, *, console: Console) -> None:
    """Job log text exactly as the job wrote it (``tether logs``): no rich rendering at all."""
    console.file.write(text)
    console.file.flush()


@dataclass(frozen=True)
class Col:
    """A table column. ``whole`` cells (ids, branches, commits, times) are never wrapped;
    other cells fold, down to ``fold_min`` characters. Columns with a ``drop`` rank are left
    out on narrow terminals, the highest rank first."""

    name: str
    whole: bool = False
    drop: int = 0
    fold_min: int = 10


Cell = str | Text


def print_table(
    *, console: Console, title: str, cols: Sequence[Col], rows: Sequence[Sequence[Cell]]
) -> None:
    """Print ``rows`` as a table that fits ``console.width``: whole cells stay on one line,
    other cells fold, droppable columns go first. When even the columns that cannot be
    dropped do not fit, each row prints as a short block of lines instead."""
    ranks = sorted({c.drop for c in cols if c.drop}, reverse=True)
    cells = [[c if isinstance(c, Text) else Text(c) for c in row] for row in rows]
    for limit in [float("inf"), *ranks]:  # all columns first, then drop rank by rank
        keep = [i for i, c in enumerate(cols) if c.drop < limit]
        if _needed_width(cols=cols, rows=cells, keep=keep) <= console.width:
            console.print(_table(title=title, cols=cols, rows=cells, keep=keep))
            return
    _print_blocks(console=console, title=title, cols=cols, rows=cells)


def _widest(col: Col, rows: list[list[Text]], i: int) -> int:
    return max([len(col.name), *(r[i].cell_len for r in rows)])


def _needed_width(*, cols: Sequence[Col], rows: list[list[Text]], keep: list[int]) -> int:
    """The narrowest the table can be with every whole cell on one line: whole columns at
    their widest cell, folding columns at ``fold_min`` (less when their cells are shorter),
    plus the borders and padding of rich's default box (3 per column, and 1)."""
    need = 3 * len(keep) + 1
    for i in keep:
        widest = _widest(cols[i], rows, i)
        need += widest if cols[i].whole else min(widest, cols[i].fold_min)
    return need


def _table(*, title: str, cols: Sequence[Col], rows: list[list[Text]], keep: list[int]) -> Table:
    table = Table(title=Text(title))
    for i in keep:
        c = cols[i]
        if c.whole:
            table.add_column(c.name, no_wrap=True, min_width=_widest(c, rows, i))
        else:
            table.add_column(c.name, overflow="fold")
    for r in rows:
        table.add_row(*(r[i] for i in keep))
    return table


def _print_blocks(
    *, console: Console, title: str, cols: Sequence[Col], rows: list[list[Text]]
) -> None:
    """Narrow terminals: a few lines per row. The cells of the columns that are never
    dropped come first, then ``name value`` for the others; each cell stays whole on its
    line (only one wider than the terminal folds), the next goes on the same line when it
    fits, else on a new line indented by two."""
    width = console.width
    console.print(Text(title, style="italic"))
    for row in rows:
        kept = [cell for col, cell in zip(cols, row, strict=True) if not col.drop and cell.plain]
        extra = [
            Text.assemble((col.name + " ", "dim"), cell)
            for col, cell in zip(cols, row, strict=True)
            if col.drop and cell.plain
        ]
        lines: list[Text] = []
        for group in (kept, extra):
            for n, cell in enumerate(group):
                if n and lines[-1].cell_len + 2 + cell.cell_len <= width:
                    lines[-1].append("  ").append_text(cell)
                else:
                    lines.append(Text("  " if lines else "").append_text(cell))
        for line in lines:
            console.print(line, soft_wrap=False, overflow="fold")
