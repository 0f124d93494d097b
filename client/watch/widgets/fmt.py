"""Short, fixed-width renderings of durations, ages, sizes and clock times for the widgets.

Clock times are local wall-clock ``HH:MM:SS`` (what the user reads off their own clock);
durations and ages are compact (``42s``, ``3m05s``, ``2h14m``) so a table column stays narrow.
"""

from __future__ import annotations

import time


def duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h14m``, ``3d04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def age(now: float, then: float | None) -> str:
    """How long ago ``then`` was, e.g. ``12s``; ``-`` when never."""
    return "-" if then is None else duration(now - then)


def clock(t: float | None) -> str:
    """``14:02:11`` in local time; ``-`` when unknown."""
    return "-" if t is None else time.strftime("%H:%M:%S", time.localtime(t))


def size(n: float | None) -> str:
    """``812 B``, ``4.2 KB``, ``1.3 MB``, ``2.0 GB`` (powers of 1024)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover


def number(v: float | None, digits: int = 4) -> str:
    """A metric value with ``digits`` significant digits; ``-`` when missing."""
    return "-" if v is None else f"{v:.{digits}g}"
