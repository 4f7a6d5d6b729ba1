"""The figure rules: title, axis labels with units, a legend for several series."""

from __future__ import annotations

from pathlib import Path

import pytest

from irlhf.report.figures import FigureError, label, new_figure, new_grid, save_figure, style_axes


def test_a_complete_figure_is_saved_as_png(tmp_path: Path) -> None:
    fig, ax = new_figure("Regret vs horizon", label("horizon T", "tokens"), label("regret", "nats"))
    ax.plot([1, 2, 3], [1, 4, 9], label="BC")
    ax.plot([1, 2, 3], [1, 2, 3], label="DAgger")
    ax.legend()
    path = save_figure(fig, tmp_path / "regret.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_one_series_needs_no_legend(tmp_path: Path) -> None:
    fig, ax = new_figure("Loss", label("step", "updates"), label("loss", "nats"))
    ax.plot([0, 1], [1, 0])
    save_figure(fig, tmp_path / "loss.png")


@pytest.mark.parametrize(
    ("title", "xlabel", "ylabel", "message"),
    [
        ("", "x (s)", "y (m)", "missing title"),
        ("T", "", "y (m)", "missing x label"),
        ("T", "x (s)", "", "missing y label"),
        ("T", "horizon", "y (m)", "x label 'horizon' has no unit"),
    ],
)
def test_missing_titles_labels_and_units_are_rejected(
    tmp_path: Path, title: str, xlabel: str, ylabel: str, message: str
) -> None:
    fig, ax = new_figure(title, xlabel, ylabel)
    ax.plot([0, 1], [0, 1])
    with pytest.raises(FigureError, match=message):
        save_figure(fig, tmp_path / "f.png")
    assert not (tmp_path / "f.png").exists()


def test_several_series_need_a_legend(tmp_path: Path) -> None:
    fig, ax = new_figure("T", "x (s)", "y (m)")
    ax.plot([0, 1], [0, 1])
    ax.scatter([0, 1], [1, 0])
    with pytest.raises(FigureError, match="2 series but no legend"):
        save_figure(fig, tmp_path / "f.png")


def test_every_panel_of_a_grid_is_checked(tmp_path: Path) -> None:
    fig, axes = new_grid("Two panels", 1, 2)
    style_axes(axes[0], "left", "x (s)", "y (m)")
    axes[0].bar([0, 1], [1, 2])
    with pytest.raises(FigureError, match="axis 1: missing title"):
        save_figure(fig, tmp_path / "f.png")
    style_axes(axes[1], "right", "x (s)", "y (m)")
    save_figure(fig, tmp_path / "f.png")


def test_colorbars_need_a_label_with_a_unit(tmp_path: Path) -> None:
    fig, ax = new_figure("Heat", "budget (comparisons)", "temperature (unitless)")
    image = ax.imshow([[0, 1], [1, 0]])
    bar = fig.colorbar(image, ax=ax)
    with pytest.raises(FigureError, match="colorbar"):
        save_figure(fig, tmp_path / "f.png")
    bar.set_label("gain (reward units)")
    save_figure(fig, tmp_path / "f.png")
