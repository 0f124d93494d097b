"""A report as a list of blocks (headings, paragraphs, tables, images, lists), rendered three
ways: ``analysis_report.txt``, ``report.md`` and a self-contained ``report.html`` (images
embedded as base64, nothing loaded from outside), so the three files always say the same."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import write_bytes_atomic


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]
    ordered: bool = False


@dataclass(frozen=True)
class TableBlock:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    path: Path  # a PNG beside the report
    caption: str


Block = Heading | Para | Bullets | TableBlock | Image


@dataclass
class Report:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


def render_markdown(report: Report, *, base: Path) -> str:
    out = [f"# {report.title}", ""]
    for b in report.blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"{i}. {t}" if b.ordered else f"- {t}" for i, t in enumerate(b.items, 1)]
            out.append("")
        elif isinstance(b, TableBlock):
            out.append("| " + " | ".join(b.header) + " |")
            out.append("|" + "|".join(" --- " for _ in b.header) + "|")
            out += ["| " + " | ".join(r) + " |" for r in b.rows]
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{b.caption}]({b.path.relative_to(base).as_posix()})", ""]
    return "\n".join(out)


def render_text(report: Report) -> str:
    out = [report.title, "=" * len(report.title), ""]
    for b in report.blocks:
        if isinstance(b, Heading):
            out += [b.text, "-" * len(b.text)]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"  {i}. {t}" if b.ordered else f"  - {t}" for i, t in enumerate(b.items, 1)]
            out.append("")
        elif isinstance(b, TableBlock):
            widths = [max(len(str(c)) for c in col) for col in zip(b.header, *b.rows, strict=True)]
            line = "  ".join(h.ljust(w) for h, w in zip(b.header, widths, strict=True))
            out += [line, "  ".join("-" * w for w in widths)]
            out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in b.rows]
            out.append("")
        elif isinstance(b, Image):
            out += [f"[plot: {b.path.name}] {b.caption}", ""]
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1000px;
margin:2rem auto;padding:0 1rem;color:#1d2125;line-height:1.45}
h1{border-bottom:2px solid #d0d7de;padding-bottom:.3rem}h2{margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #d0d7de;
padding:.3rem .6rem;text-align:left}th{background:#f6f8fa}
figure{margin:1rem 0}img{max-width:100%;border:1px solid #eaeef2}
figcaption{color:#57606a;font-size:.9rem}.red{color:#b42318;font-weight:600}
.amber{color:#b54708;font-weight:600}.green{color:#067647;font-weight:600}
"""


def render_html(report: Report) -> str:
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(report.title)}</h1>",
    ]
    for b in report.blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_flags(esc(b.text))}</p>")
        elif isinstance(b, Bullets):
            tag = "ol" if b.ordered else "ul"
            items = "".join(f"<li>{_flags(esc(t))}</li>" for t in b.items)
            out.append(f"<{tag}>{items}</{tag}>")
        elif isinstance(b, TableBlock):
            head = "".join(f"<th>{esc(h)}</th>" for h in b.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_flags(esc(c))}</td>" for c in r) + "</tr>" for r in b.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode(b.path.read_bytes()).decode()
            out.append(
                f'<figure><img alt="{esc(b.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(b.caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)


def _flags(text: str) -> str:
    for flag in ("red", "amber", "green"):
        text = text.replace(f"[{flag}]", f'<span class="{flag}">{flag.upper()}</span>')
    return text


def write_report(report: Report, *, out_dir: Path, stem: str = "report") -> dict[str, Path]:
    """Write ``analysis_report.txt``, ``<stem>.md`` and ``<stem>.html`` atomically."""
    paths = {
        "text": out_dir / "analysis_report.txt",
        "markdown": out_dir / f"{stem}.md",
        "html": out_dir / f"{stem}.html",
    }
    write_bytes_atomic(paths["text"], render_text(report).encode())
    write_bytes_atomic(paths["markdown"], render_markdown(report, base=out_dir).encode())
    write_bytes_atomic(paths["html"], render_html(report).encode())
    return paths
