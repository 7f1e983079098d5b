"""PNG charts of a chaos report, with matplotlib's file-only backend like the soak's: what the
supervisor said of each pipeline over time with the faults on top, and each fault's recovery
against the target. matplotlib is a ``dev`` extra; without it the run writes its JSON only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from streamops.chaos.report import (
    DEFAULT_TARGET_P99_SECONDS,
    NOT_INJECTED,
    NOT_RECOVERED,
    STATES,
    seconds_into_run,
    was_injected,
)
from streamops.soak.plots import _pyplot, _save, available

__all__ = ["available", "draw_all", "recovery_bars", "state_timeline"]

# Okabe–Ito where it reads well: green for running, warm colours for trouble, greys for no word.
STATE_COLOURS = {
    "starting": "#0072B2",
    "running": "#009E73",
    "overloaded": "#E69F00",
    "backing_off": "#F0E442",
    "waiting": "#56B4E9",
    "stalled": "#CC79A7",
    "failed": "#D55E00",
    "stopped": "#999999",
    "breaker_open": "#000000",
    "unknown": "#DDDDDD",
}
OTHER_STATE_COLOUR = "#DDDDDD"
# One hue per family of faults (a pipeline's processes blue, Airflow orange, services green,
# kill points purple), fixed, so that two runs' charts read alike.
KIND_COLOURS = {
    "kill_shell": "#08519C",
    "kill_jvm": "#3182BD",
    "kill_driver": "#6BAED6",
    "kill_worker": "#9ECAE1",
    "kill_scheduler": "#A63603",
    "kill_triggerer": "#E6550D",
    "kill_dag_processor": "#FD8D3C",
    "restart_kafka": "#006D2C",
    "stop_mariadb": "#31A354",
    "stop_redis": "#74C476",
    "kill_point_revenue": "#54278F",
    "kill_point_chunks": "#9E9AC8",
}
OTHER_KIND_COLOUR = "#777777"
NOT_RECOVERED_COLOUR = "#D55E00"


def draw_all(report: Mapping[str, Any], folder: Path, stem: str) -> list[Path]:
    """Every chart of ``report`` into ``folder``: ``<stem>-timeline.png`` and
    ``<stem>-recovery.png``."""
    faults = report["faults"]
    injected = [seconds_into_run(report, float(f["injected_at"])) for f in faults]
    ended = [
        seconds_into_run(report, float(f["ended_at"] if f.get("ended_at") else f["injected_at"]))
        for f in faults
    ]
    recovery = report["recovery"]
    return [
        state_timeline(
            folder / f"{stem}-timeline.png",
            timelines=report["verdicts"].get("timeline", {}),
            end_seconds=float(report["duration_seconds"]),
            faults=[
                (str(fault["kind"]), start, end)
                for fault, start, end in zip(faults, injected, ended, strict=True)
            ],
            load=[(float(at), float(load)) for at, load in report.get("load", [])],
        ),
        recovery_bars(
            folder / f"{stem}-recovery.png",
            faults=faults,
            target_seconds=float(recovery.get("target_p99_seconds", DEFAULT_TARGET_P99_SECONDS)),
            timeout_seconds=float(report["options"]["recovery_timeout_seconds"]),
        ),
    ]


def state_timeline(
    path: Path,
    *,
    timelines: Mapping[str, Sequence[Sequence[Any]]],
    end_seconds: float,
    faults: Sequence[tuple[str, float, float]],
    load: Sequence[tuple[float, float]],
) -> Path:
    """One band per pipeline coloured by the supervisor's state (``timelines``: state changes
    as ``[elapsed, state]``); a vertical line at each fault's start labelled by kind (``faults``:
    kind, start, end in seconds), outages shaded from start to end; the load on a second axis."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    pipelines = list(timelines)
    figure, axes = plt.subplots(figsize=(12, 2.6 + 0.45 * max(1, len(pipelines))))
    try:
        seen: list[str] = []
        for row, pipeline in enumerate(pipelines):
            changes = [(float(at), str(state)) for at, state in timelines[pipeline]]
            for index, (start, state) in enumerate(changes):
                end = changes[index + 1][0] if index + 1 < len(changes) else end_seconds
                if end <= start:
                    continue
                axes.broken_barh(
                    [(start / 60, (end - start) / 60)],
                    (row - 0.4, 0.8),
                    facecolors=STATE_COLOURS.get(state, OTHER_STATE_COLOUR),
                )
                if state not in seen:
                    seen.append(state)
        for kind, start, end in faults:
            if end > start:
                axes.axvspan(start / 60, end / 60, color="#999999", alpha=0.25, linewidth=0)
            axes.axvline(start / 60, color="black", linewidth=0.8, alpha=0.7)
            axes.text(
                start / 60,
                1.01,
                kind,
                transform=axes.get_xaxis_transform(),
                rotation=60,
                fontsize=7,
                ha="left",
                va="bottom",
            )
        axes.set_yticks(range(len(pipelines)), pipelines)
        axes.set_ylim(-0.6, max(1, len(pipelines)) - 0.4)
        axes.invert_yaxis()
        axes.set_xlim(0, max(end_seconds, 1.0) / 60)
        axes.set_xlabel("minutes into the run")
        handles: list[Any] = [
            Patch(color=STATE_COLOURS.get(state, OTHER_STATE_COLOUR), label=state)
            for state in sorted(seen, key=lambda s: STATES.index(s) if s in STATES else len(STATES))
        ]
        handles.append(Patch(color="#999999", alpha=0.25, label="outage"))
        if load:
            load_axes = axes.twinx()
            (line,) = load_axes.plot(
                [at / 60 for at, _ in load],
                [value for _, value in load],
                color="#0072B2",
                linewidth=1,
                alpha=0.8,
                label="load (1 min)",
            )
            load_axes.set_ylabel("load average")
            load_axes.set_ylim(bottom=0)
            handles.append(line)
        # Right of the load axis's labels.
        _legend_outside(axes, handles, "upper left", (1.06, 1.0))
        figure.suptitle("Supervisor's state per pipeline; faults as lines, outages shaded")
        figure.tight_layout()
        return _save(figure, path)
    finally:
        plt.close(figure)


def recovery_bars(
    path: Path,
    *,
    faults: Sequence[Mapping[str, Any]],
    target_seconds: float,
    timeout_seconds: float,
) -> Path:
    """One bar per fault in order, coloured by kind, its height the recovery in seconds; a
    fault that did not recover stands at the time-out, hatched and marked; the target dashed."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    figure, axes = plt.subplots(figsize=(max(6.4, 0.45 * len(faults) + 2), 4.6))
    try:
        kinds = list(dict.fromkeys(str(fault["kind"]) for fault in faults))
        colour_of = {kind: KIND_COLOURS.get(kind, OTHER_KIND_COLOUR) for kind in kinds}
        for position, fault in enumerate(faults):
            colour = colour_of[str(fault["kind"])]
            seconds = fault.get("recovery_seconds")
            if not was_injected(fault):
                axes.text(
                    position, 1, NOT_INJECTED, rotation=90, fontsize=7, ha="center", va="bottom"
                )
            elif seconds is None:
                axes.bar(
                    position,
                    timeout_seconds,
                    color=colour,
                    alpha=0.35,
                    hatch="//",
                    edgecolor=NOT_RECOVERED_COLOUR,
                )
                axes.scatter(
                    [position], [timeout_seconds], marker="x", color=NOT_RECOVERED_COLOUR, zorder=3
                )
            else:
                axes.bar(position, float(seconds), color=colour)
        axes.axhline(target_seconds, color="black", linestyle="--", linewidth=1)
        axes.set_xticks(
            range(len(faults)),
            [str(fault["id"]) for fault in faults],
            fontsize=8,
        )
        axes.set_xlim(-0.6, max(1, len(faults)) - 0.4)
        axes.set_xlabel("fault (in order of injection)")
        axes.set_ylabel("seconds from the fault's end to caught up")
        axes.set_ylim(0, max(timeout_seconds, target_seconds) * 1.08)
        axes.grid(axis="y", alpha=0.3)
        handles: list[Any] = [Patch(color=colour_of[kind], label=kind) for kind in kinds]
        handles.append(
            plt.Line2D([], [], color="black", linestyle="--", label=f"target {target_seconds:g} s")
        )
        handles.append(
            Patch(
                facecolor="white",
                hatch="//",
                edgecolor=NOT_RECOVERED_COLOUR,
                label=f"{NOT_RECOVERED} (at the time-out)",
            )
        )
        _legend_outside(axes, handles, "center left", (1.01, 0.5))
        axes.set_title("Recovery per fault")
        figure.tight_layout()
        return _save(figure, path)
    finally:
        plt.close(figure)


def _legend_outside(axes: Any, handles: list[Any], loc: str, anchor: tuple[float, float]) -> None:
    axes.legend(handles=handles, loc=loc, bbox_to_anchor=anchor, fontsize=8, frameon=False)
