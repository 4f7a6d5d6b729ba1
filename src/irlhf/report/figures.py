"""Figures for studies, with the report's rules enforced: every axis has a title, axis labels
with units, and a legend when it shows more than one series.

    fig, ax = new_figure("Regret vs horizon", label("horizon T", "tokens"), label("regret", "nats"))
    ax.plot(T, bc, label="BC"); ax.plot(T, dagger, label="DAgger"); ax.legend()
    save_figure(fig, out / "regret.png")       # raises FigureError if a rule is broken

Figures are plain `matplotlib.figure.Figure`s (no pyplot, no global state), rendered with Agg.
A unit is written in parentheses or brackets at the end of a label; dimensionless quantities say
so: "win rate (fraction)", "AccErr (ratio)".
"""

from __future__ import annotations

import re
from io import BytesIO
from pathlib import Path

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from irlhf.experiments.storage import atomic_write_bytes

DPI = 120
SIZE = (6.4, 4.2)  # inches, one panel
_UNIT = re.compile(r"[(\[][^()\[\]]+[)\]]\s*$")
COLORBAR_LABEL = "<colorbar>"


class FigureError(ValueError):
    """A figure breaks the report's rules (missing title, axis label, unit or legend)."""


def label(name: str, unit: str) -> str:
    """An axis label with its unit: label("horizon T", "tokens") -> "horizon T (tokens)"."""
    return f"{name} ({unit})"


def style_axes(ax: Axes, title: str, xlabel: str, ylabel: str) -> Axes:
    """Set an axis' title and labels, with a light grid."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    return ax


def new_figure(
    title: str, xlabel: str, ylabel: str, size: tuple[float, float] = SIZE
) -> tuple[Figure, Axes]:
    """One-panel figure with its title and axis labels (give units: see `label`)."""
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    return fig, style_axes(ax, title, xlabel, ylabel)


def new_grid(
    title: str, nrows: int, ncols: int, panel_size: tuple[float, float] = SIZE
) -> tuple[Figure, list[Axes]]:
    """A figure of nrows x ncols panels with an overall title; label each panel with
    `style_axes(ax, title, xlabel, ylabel)`. Axes come back in row-major order."""
    size = (panel_size[0] * ncols, panel_size[1] * nrows)
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def shared_legend(fig: Figure, axes: list[Axes]) -> None:
    """One legend below the panels (every label once), so that no curve is hidden under it."""
    entries: dict[str, Artist] = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        entries.update({lab: h for h, lab in zip(handles, labels, strict=True)})
    fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncol=4, fontsize=7)


def _n_series(ax: Axes) -> int:
    """Data series drawn on an axis: lines, scatters, bar groups and error bars (the lines an
    error bar draws count once, through its container)."""
    in_containers = {
        id(artist)
        for container in ax.containers
        for artist in container.get_children()
        if artist is not None
    }
    lines = [line for line in ax.get_lines() if id(line) not in in_containers]
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    bars = [c for c in ax.containers if isinstance(c, (BarContainer, ErrorbarContainer))]
    return len(lines) + len(scatters) + len(bars)


def _check_label(text: str, what: str, where: str) -> None:
    if not text.strip():
        raise FigureError(f"{where}: missing {what}")
    if not _UNIT.search(text):
        raise FigureError(
            f"{where}: {what} {text!r} has no unit; end it with '(unit)', e.g. label(name, unit)"
        )


def check_figure(fig: Figure) -> None:
    """Raise FigureError unless every panel has a title, x and y labels with units, and a
    legend when it shows more than one series. A colorbar needs a label with a unit."""
    axes = fig.get_axes()
    if not axes:
        raise FigureError("figure has no axes")
    for i, ax in enumerate(axes):
        where = f"axis {i} ({ax.get_title() or 'untitled'})"
        if ax.get_label() == COLORBAR_LABEL:
            _check_label(ax.get_ylabel() or ax.get_xlabel(), "colorbar label", where)
            continue
        if not ax.axison:
            continue  # a blank panel of a grid
        if not ax.get_title().strip():
            raise FigureError(f"axis {i}: missing title")
        _check_label(ax.get_xlabel(), "x label", where)
        _check_label(ax.get_ylabel(), "y label", where)
        if _n_series(ax) > 1 and ax.get_legend() is None and not fig.legends:
            raise FigureError(f"{where}: {_n_series(ax)} series but no legend")


def save_figure(fig: Figure, path: Path) -> Path:
    """Check the figure (`check_figure`) and write it as a PNG, atomically."""
    check_figure(fig)
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise FigureError(f"{path}: figures are saved as .png")
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())
    return path
