"""Plots: adaptation curves (mean return after 0..K inner steps with 95 % confidence bands)
and learning curves (training return against env steps).

matplotlib is imported inside the functions (Agg backend, no display needed), so nothing else
in the package pays for it or needs it installed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol


class Curve(Protocol):
    """What a plot needs of a curve (``meta_rl.evaluation.AdaptationCurve``, which imports
    this module: naming it here would be an import cycle)."""

    def mean_ci(self) -> list[tuple[float, float]]:
        """(mean, confidence half-width) after each of 0..K inner steps."""
        ...


@contextlib.contextmanager
def _figure(
    labels: Sequence[str], out: Path, title: str, xlabel: str, ylabel: str
) -> Iterator[Any]:
    """Axes to draw on; then labels, grid and legend are added and the PNG written to ``out``."""
    try:
        import matplotlib
    except ModuleNotFoundError as exc:
        raise RuntimeError("plotting needs matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    # Legend beside the axes, never over the curves: the figure widens with the longest label.
    longest = max((len(label) for label in labels), default=0)
    fig, ax = plt.subplots(figsize=(6.0 + min(longest, 60) * 0.07, 4.0), dpi=100)
    try:
        yield ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)


def plot_curves(
    curves: Sequence[tuple[str, Curve]],
    out: str | Path,
    title: str = "",
) -> Path:
    """One line per (label, curve) with its confidence band; written as a PNG to ``out``."""
    out = Path(out)
    labels = [label for label, _ in curves]
    xlabel, ylabel = "number of inner gradient steps", "mean return (95% CI over tasks)"
    with _figure(labels, out, title, xlabel, ylabel) as ax:
        max_steps = 0
        for label, curve in curves:
            stats = curve.mean_ci()
            steps = list(range(len(stats)))
            mean = [m for m, _ in stats]
            half = [0.0 if h != h else h for _, h in stats]  # NaN (one task): no band
            (line,) = ax.plot(steps, mean, marker="o", label=label)
            ax.fill_between(
                steps,
                [m - h for m, h in zip(mean, half, strict=True)],
                [m + h for m, h in zip(mean, half, strict=True)],
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
            max_steps = max(max_steps, len(steps) - 1)
        ax.set_xticks(range(max_steps + 1))
    return out


def plot_learning_curves(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    out: str | Path,
    title: str = "",
    ylabel: str = "mean return of training episodes",
) -> Path:
    """One line per (label, env steps, training return, or the ``ylabel`` metric); written as
    a PNG to ``out``.

    Methods with very different budgets share the axis, so env steps are on a log scale."""
    out = Path(out)
    labels = [label for label, _, _ in series]
    xlabel = "env steps of training"
    with _figure(labels, out, title, xlabel, ylabel) as ax:
        for label, steps, returns in series:
            ax.plot(steps, returns, label=label, linewidth=1.2)
        ax.set_xscale("log")
    return out
