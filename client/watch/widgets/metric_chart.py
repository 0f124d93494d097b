"""Metric charts: one value per epoch, one line per trial in its stable colour.

Four charts in a grid: ``loss``, ``val_loss``, and the run's quality metric with its ``val_``
twin (``accuracy`` for classification, else the first of f1, mse, mae the run reports). A
pinned trial is drawn last, bold, on top; while any trial is pinned the others fade.
Charts are redrawn only when a series grew or the pins changed (``update_view`` is cheap).
"""

from __future__ import annotations

from rich.markup import escape
from textual.containers import Grid
from textual_hires_canvas import HiResMode
from textual_plot import PlotWidget

from ..colors import dimmed
from ..model import RunModel

HIRES = HiResMode.BRAILLE
QUALITY = ("accuracy", "f1", "mse", "mae")


def line_style(color: str, *, pinned: set, trial: str | None) -> str:
    """The style of a trial's line: its colour, bold when pinned, faded when others are."""
    if not pinned:
        return color
    return f"bold {color}" if trial in pinned else dimmed(color)


class MetricChart(PlotWidget, can_focus=False):
    """One metric over epochs for every trial given."""

    DEFAULT_CSS = """
    MetricChart {
        height: 1fr;
        width: 1fr;
    }
    """

    def __init__(self, metric: str, *, id: str | None = None) -> None:
        super().__init__(id=id, allow_pan_and_zoom=False)
        self.metric = metric
        self.line_styles: dict[str | None, str] = {}  # what each trial was drawn with
        self._shown: tuple | None = None

    def on_mount(self) -> None:
        self.margin_top, self.margin_bottom, self.margin_left = 1, 1, 8
        self.set_ylabel(escape(self.metric))

    def set_metric(self, metric: str) -> None:
        if metric != self.metric:
            self.metric, self._shown = metric, None
            self.set_ylabel(escape(metric))

    def show(self, model: RunModel, *, trials: list, colors: dict, pinned: set) -> None:
        series = {t: model.series(t, self.metric) for t in trials}
        key = (
            tuple((t, len(s), s[-1] if s else None) for t, s in series.items()),
            frozenset(pinned),
        )
        if key == self._shown:
            return
        self._shown = key
        self.clear()
        self.line_styles = {}
        # pinned lines last: drawn on top of the faded ones
        for t in sorted(series, key=lambda t: t in pinned):
            points = [(e, v) for e, v in series[t] if v is not None]
            if not points:
                continue
            style = line_style(colors.get(t, "white"), pinned=pinned, trial=t)
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            if len(points) == 1:
                self.scatter(xs, ys, marker="●", marker_style=style)
            else:
                self.plot(xs, ys, line_style=style, hires_mode=HIRES)
            self.line_styles[t] = style
        self.set_ylabel(escape(self.metric))


def quality_metric(names: list[str]) -> str:
    present = {n.removeprefix("val_") for n in names}
    return next((m for m in QUALITY if m in present), "accuracy")


class ChartsGrid(Grid):
    DEFAULT_CSS = """
    ChartsGrid {
        grid-size: 2 2;
        grid-gutter: 0 1;
        height: 1fr;
        border: round $primary-darken-2;
        border-title-color: $text-muted;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "metrics per epoch"
        self.charts = {
            "loss": MetricChart("loss", id="chart-loss"),
            "val_loss": MetricChart("val_loss", id="chart-val-loss"),
            "quality": MetricChart("accuracy", id="chart-quality"),
            "val_quality": MetricChart("val_accuracy", id="chart-val-quality"),
        }
        self._series_count = -1

    def compose(self):
        yield from self.charts.values()

    def show(self, model: RunModel, *, trials: list, colors: dict, pinned: set) -> None:
        if len(model.epoch_metrics) != self._series_count:
            self._series_count = len(model.epoch_metrics)
            quality = quality_metric(model.metric_names())
            self.charts["quality"].set_metric(quality)
            self.charts["val_quality"].set_metric(f"val_{quality}")
        for chart in self.charts.values():
            chart.show(model, trials=trials, colors=colors, pinned=pinned)
