"""Reports: ``analysis_report.txt``, ``report.md`` and a self-contained ``report.html``.

A report is built once as a list of blocks (headings, paragraphs, tables, images, lists)
and rendered three ways, so the three files always say the same thing. Every number comes
from the data; where a stored metric disagrees with the confusion matrix the report shows
both and uses the matrix. HTML embeds its images (base64) and loads nothing from outside.

One module per concern: ``document`` (the blocks and the three renderings), ``checks`` (test
metrics against the confusion matrix, targets split), ``results`` and ``sections``
(``analyze_results``: one training run), ``csvreport`` (``analyze_csv``: W&B CSV exports).
"""

from .checks import (
    AGREE_TOLERANCE,
    TEST_METRICS,
    MetricCheck,
    check_classification,
    read_run_meta,
    split_targets,
)
from .csvreport import analyze_csv
from .document import (
    Block,
    Bullets,
    Heading,
    Image,
    Para,
    Report,
    TableBlock,
    render_html,
    render_markdown,
    render_text,
    write_report,
)
from .results import Analysis, analyze_results

__all__ = [
    "AGREE_TOLERANCE",
    "TEST_METRICS",
    "Analysis",
    "Block",
    "Bullets",
    "Heading",
    "Image",
    "MetricCheck",
    "Para",
    "Report",
    "TableBlock",
    "analyze_csv",
    "analyze_results",
    "check_classification",
    "read_run_meta",
    "render_html",
    "render_markdown",
    "render_text",
    "split_targets",
    "write_report",
]
