"""PNG charts of benchmark results, drawn with matplotlib's file-only backend (no display needed).

matplotlib is in the ``bench`` and ``dev`` extras, not in ``spark``: :func:`require_matplotlib`
says how to install it, so a benchmark can check before it spends minutes measuring.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import BenchmarkError

# Muted, colour-blind-safe (Okabe–Ito) colours, one per series.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")
DPI = 120


def require_matplotlib() -> None:
    """Raise BenchmarkError when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise BenchmarkError(
            f"matplotlib is not installed in {sys.prefix}; it draws the benchmark's PNG charts. "
            "Install the `bench` extra into this (Spark's) environment: pip install "
            "'streamops[bench]' (`streamops install` puts it there in a source checkout)."
        ) from error


def bar_chart(
    path: Path,
    *,
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    ylabel: str,
    runs: Sequence[Sequence[float]] = (),
    reference: float | None = None,
    reference_label: str | None = None,
    note: str | None = None,
    value_format: str = "{:,.0f}",
) -> Path:
    """One bar per label, its value printed on top (``value_format``); ``runs`` adds each repeat
    as a dot and ``reference`` a dashed line."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    try:
        positions = range(len(labels))
        bars = axes.bar(positions, values, color=COLOURS[: len(labels)], width=0.55)
        axes.bar_label(bars, labels=[value_format.format(value) for value in values], padding=3)
        for position, repeats in zip(positions, runs, strict=False):
            axes.scatter([position] * len(repeats), repeats, color="black", s=14, zorder=3)
        if reference is not None:
            axes.axhline(
                reference, color="#D55E00", linestyle="--", linewidth=1, label=reference_label
            )
            axes.legend(loc="upper right", fontsize=8, frameon=False)
        # Many or long labels would overlap side by side: slant them.
        slanted = len(labels) > 3 or max((len(label) for label in labels), default=0) > 16
        axes.set_xticks(
            list(positions),
            list(labels),
            rotation=25 if slanted else 0,
            ha="right" if slanted else "center",
            fontsize=8 if slanted else None,
        )
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        axes.set_ylim(0, max([*values, *(v for r in runs for v in r), 1.0]) * 1.18)
        axes.grid(axis="y", alpha=0.3)
        if note:
            figure.text(0.01, 0.01, note, fontsize=8, color="#444444")
        figure.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
        return _save(figure, path)
    finally:
        plt.close(figure)


def grouped_bars(
    path: Path,
    *,
    title: str,
    panels: Mapping[str, Mapping[str, Sequence[float | None]]],
    groups: Sequence[str],
    ylabel: str,
    reference: float | None = None,
    reference_label: str | None = None,
    log_scale: bool = False,
    missing: str = "n/a",
    label: Callable[[float], str] = lambda value: f"{value:,.0f}",
    note: str | None = None,
) -> Path:
    """One panel per key of ``panels``; in each, per group (x), one bar per series.

    ``panels[panel][series][i]`` is the value of ``series`` for ``groups[i]``; None draws no bar
    but the text ``missing`` (a value that could not be measured). ``label`` formats the value
    printed above a bar; ``reference`` draws a dashed line.
    """
    plt = _pyplot()
    # Where bars start on a log axis, and where a missing value's text sits.
    floor = 10.0 if log_scale else 0.0
    # Room for every group: a chart of eight groups at the width of three is unreadable.
    width = max(5.2, 1.1 * len(groups) + 1.5)
    figure, axes_list = plt.subplots(
        1, len(panels), figsize=(width * len(panels), 4.4), squeeze=False, sharey=True
    )
    longest = max((len(line) for group in groups for line in group.splitlines()), default=0)
    slanted = len(groups) > 3 and longest > 10
    try:
        for axes, (panel, series) in zip(axes_list[0], panels.items(), strict=True):
            width = 0.8 / max(len(series), 1)
            for index, (name, values) in enumerate(series.items()):
                offset = (index - (len(series) - 1) / 2) * width
                colour = COLOURS[index % len(COLOURS)]
                for group, value in enumerate(values):
                    x = group + offset
                    if value is None:
                        axes.text(
                            x, floor, missing, ha="center", va="bottom", fontsize=7, rotation=90
                        )
                        continue
                    axes.bar(x, value, width=width, color=colour)
                    axes.text(x, value, label(value), ha="center", va="bottom", fontsize=7)
                # An empty bar, so that the legend shows every series once.
                axes.bar(0, 0, width=0, color=colour, label=name)
            if reference is not None:
                axes.axhline(
                    reference, color="#D55E00", linestyle="--", linewidth=1, label=reference_label
                )
            axes.set_xticks(
                range(len(groups)),
                list(groups),
                rotation=25 if slanted else 0,
                ha="right" if slanted else "center",
                fontsize=8 if slanted else None,
            )
            axes.set_xlim(-0.5, len(groups) - 0.5)
            axes.set_title(panel)
            axes.grid(axis="y", alpha=0.3)
            if log_scale:
                axes.set_yscale("log")
        top = max([v for p in panels.values() for vs in p.values() for v in vs if v] + [floor])
        for axes in axes_list[0]:
            # Head room for the labels above the tallest bar (and for the legend).
            axes.set_ylim(floor if log_scale else 0, top * (6 if log_scale else 1.25))
        axes_list[0][0].set_ylabel(ylabel)
        figure.suptitle(title)
        # In the head room above the bars, once: every panel has the same series.
        axes_list[0][0].legend(loc="upper left", ncol=4, fontsize=8, frameon=False)
        if note:
            figure.text(0.01, 0.01, note, fontsize=8, color="#444444")
        figure.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
        return _save(figure, path)
    finally:
        plt.close(figure)


def line_chart(
    path: Path,
    *,
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    xlabel: str,
    ylabel: str,
    diagonal: bool = False,
    note: str | None = None,
) -> Path:
    """One line with markers per series of (x, y) points; ``diagonal`` draws y = x dashed (for
    achieved against offered rate: a point on it kept up)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    try:
        for index, (name, points) in enumerate(series.items()):
            xs, ys = [x for x, _ in points], [y for _, y in points]
            axes.plot(
                xs, ys, marker="o", markersize=3, color=COLOURS[index % len(COLOURS)], label=name
            )
        if diagonal:
            top = max([max(x, y) for points in series.values() for x, y in points] + [1.0])
            axes.plot(
                [0, top],
                [0, top],
                color="#D55E00",
                linestyle="--",
                linewidth=1,
                label="achieved = offered",
            )
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        axes.grid(alpha=0.3)
        if series:
            axes.legend(loc="best", fontsize=8, frameon=False)
        if note:
            figure.text(0.01, 0.01, note, fontsize=8, color="#444444")
        figure.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
        return _save(figure, path)
    finally:
        plt.close(figure)


def _pyplot() -> Any:
    require_matplotlib()
    import matplotlib

    # Files only: no display, no GUI toolkit, safe in CI and over SSH.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path
