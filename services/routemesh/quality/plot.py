"""Cost–quality curves as a PNG: accuracy against strong-call share, one panel per benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from routemesh.quality.evaluate import BenchmarkResult, MethodResult

# Fixed inches and dpi make the image the same size in pixels on every machine.
PANEL_INCHES = (5.0, 4.2)
DPI = 100


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed: it is a training extra, not a serving dependency."""


def _figure_type():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailable(f"the plot needs matplotlib ({exc}): pip install -e '.[train]'") from None
    return Figure, FigureCanvasAgg


def _label(method: MethodResult, target_fraction: float) -> str:
    apgr = "undefined" if method.apgr is None else f"{method.apgr:.3f}"
    return f"{method.method}: APGR {apgr}, {target_fraction:.0%} at {method.strong_share_at_target:.0%} strong"


def plot_curves(results: Sequence[BenchmarkResult], path: str | Path) -> Path:
    """Write the curves of every benchmark with prompts to `path` (PNG) and return the path."""
    shown = [r for r in results if r.methods]
    if not shown:
        raise ValueError("nothing to plot: no benchmark has prompts")
    figure_type, canvas_type = _figure_type()
    # A Figure with its own Agg canvas, not pyplot: no global state and no interactive backend.
    figure = figure_type(figsize=(PANEL_INCHES[0] * len(shown), PANEL_INCHES[1]), dpi=DPI)
    canvas_type(figure)
    for index, result in enumerate(shown):
        axes = figure.add_subplot(1, len(shown), index + 1)
        for method in result.methods:
            axes.plot(method.curve.shares, method.curve.accuracies, linewidth=1.2,
                      label=_label(method, result.target_fraction))
        axes.axhline(result.target_accuracy, color="black", linestyle="--", linewidth=1,
                     label=f"{result.target_fraction:.0%} of strong ({result.target_accuracy:.3f})")
        axes.set_title(f"{result.benchmark} (n={result.n})")
        axes.set_xlabel("strong-model calls (share of prompts)")
        axes.set_ylabel("accuracy")
        axes.set_xlim(0, 1)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png", dpi=DPI)
    return path
