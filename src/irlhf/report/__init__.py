"""The static HTML report and the figure helpers studies draw with.

`write_report(dirs, out_html)` turns study directories into one self-contained page;
`irlhf.report.figures` makes figures that obey the report's rules (title, axis labels with
units, legends).
"""

from irlhf.report.figures import FigureError, label, new_figure, new_grid, save_figure, style_axes
from irlhf.report.html import render_report, write_report

__all__ = [
    "FigureError",
    "label",
    "new_figure",
    "new_grid",
    "render_report",
    "save_figure",
    "style_axes",
    "write_report",
]
