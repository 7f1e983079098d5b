"""PNG charts of a soak report, with matplotlib's file-only backend (as benchmarks/plots.py draws
the benchmarks'): latency over time per output, CPU per component as a stacked area, RSS per
component likewise. matplotlib is a ``dev`` extra; without it the soak writes its JSON only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DPI = 120
GIB = 2**30


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def draw_all(report: Mapping[str, Any], folder: Path, stem: str) -> list[Path]:
    """Every chart of ``report`` into ``folder`` as ``<stem>-<chart>.png``."""
    outputs = report["outputs"]
    cost = report["cost"]
    timeout = float(report["options"]["timeout_seconds"])
    groups = [g for g in cost["components"] if any(s["cores"].get(g) for s in cost["samples"])]
    rss_groups = [
        g for g in cost["components"] if any(s["rss_bytes"].get(g) for s in cost["samples"])
    ]
    elapsed = [float(s["elapsed_seconds"]) / 60 for s in cost["samples"]]
    cpus = cost["machine"]["logical_cpus"]
    paths = [
        latency_over_time(
            folder / f"{stem}-latency.png",
            {name: output["samples"] for name, output in outputs.items()},
            timeout_seconds=timeout,
        )
    ]
    if elapsed:
        paths.append(
            stacked_area(
                folder / f"{stem}-cpu.png",
                title="CPU per component (stacked)",
                minutes=elapsed,
                series={
                    g: [float(s["cores"].get(g, 0.0)) for s in cost["samples"]] for g in groups
                },
                ylabel="cores",
                reference=cpus * 0.5 if cpus else None,
                reference_label="target for the platform: half the CPUs",
                top=float(cpus) if cpus else None,
            )
        )
        paths.append(
            stacked_area(
                folder / f"{stem}-rss.png",
                title="RSS per component (stacked; summed RSS, an upper bound)",
                minutes=elapsed,
                series={
                    g: [int(s["rss_bytes"].get(g, 0)) / GIB for s in cost["samples"]]
                    for g in rss_groups
                },
                ylabel="GiB",
                reference=6.0,
                reference_label="target: 6 GiB",
            )
        )
    return paths


def latency_over_time(
    path: Path,
    outputs: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    timeout_seconds: float,
) -> Path:
    """One panel per output: each probe's latency (s) against when it was sent (min); misses
    as red crosses at the time-out."""
    plt = _pyplot()
    names = list(outputs)
    columns = 3
    rows = max(1, -(-len(names) // columns))
    figure, axes_grid = plt.subplots(
        rows, columns, figsize=(12, 2.8 * rows), squeeze=False, sharex=True
    )
    try:
        for index, axes in enumerate(axes_grid.flat):
            if index >= len(names):
                axes.set_visible(False)
                continue
            name = names[index]
            samples = outputs[name]
            seen = [
                (s["elapsed_seconds"] / 60, s["latency_ms"] / 1000)
                for s in samples
                if s["latency_ms"] is not None
            ]
            missed = [s["elapsed_seconds"] / 60 for s in samples if s["missed"]]
            if seen:
                axes.plot(
                    [x for x, _ in seen],
                    [y for _, y in seen],
                    marker="o",
                    markersize=2.5,
                    linewidth=0.6,
                    color="#0072B2",
                )
            if missed:
                axes.scatter(
                    missed, [timeout_seconds] * len(missed), marker="x", color="#D55E00", s=18
                )
            axes.set_title(name, fontsize=9)
            axes.grid(alpha=0.3)
            axes.set_ylim(bottom=0)
            if index % columns == 0:
                axes.set_ylabel("seconds")
        for axes in axes_grid[-1]:
            axes.set_xlabel("minutes into the soak")
        figure.suptitle("Latency per probe: acknowledged → visible (× = missed)")
        figure.tight_layout()
        return _save(figure, path)
    finally:
        plt.close(figure)


def stacked_area(
    path: Path,
    *,
    title: str,
    minutes: Sequence[float],
    series: Mapping[str, Sequence[float]],
    ylabel: str,
    reference: float | None = None,
    reference_label: str | None = None,
    top: float | None = None,
) -> Path:
    """One band per series, stacked in the given order; ``reference`` draws a dashed line."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(10, 5))
    try:
        # tab20: the Okabe–Ito six of benchmarks/plots.py are too few for ~16 components.
        colours = plt.get_cmap("tab20").colors
        if series:
            axes.stackplot(
                list(minutes),
                *[list(values) for values in series.values()],
                labels=list(series),
                colors=[colours[i % len(colours)] for i in range(len(series))],
                alpha=0.9,
            )
        if reference is not None:
            axes.axhline(
                reference, color="black", linestyle="--", linewidth=1, label=reference_label
            )
        axes.set_xlabel("minutes into the soak")
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.set_ylim(bottom=0, top=top)
        axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
        figure.tight_layout()
        return _save(figure, path)
    finally:
        plt.close(figure)


def _pyplot() -> Any:
    import logging

    import matplotlib

    # Its first run builds a font cache and says so at INFO, through whatever handler the
    # process has (Airflow's, once its modules are imported): not news for the soak's reader.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)

    # Files only: no display, no GUI toolkit.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path
