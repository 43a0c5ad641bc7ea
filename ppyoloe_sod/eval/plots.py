"""The PNG plots: precision-recall curves per class, one panel each (where AP is lost is easier seen than read),
and the curves of a training run (losses, learning rate, mAP per evaluation)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ppyoloe_sod.eval.metrics import CocoMetrics
from ppyoloe_sod.fileio import atomic_open


def plot_pr_curves(
    metrics: CocoMetrics, path: str | os.PathLike, iou_thrs: tuple[float, ...] = (0.5, 0.75), title: str | None = None
) -> Path:
    """Draw, per class, precision against recall at each IoU in ``iou_thrs`` and averaged over IoU .50:.95.

    Curves are pycocotools' interpolated precision at its 101 recall thresholds (100 detections per image);
    a class without ground truth gets an empty panel saying so. Returns the written path.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, works headless (Agg)

    prec, rec = metrics.precision, metrics.rec_thrs
    k_total = len(metrics.per_class)
    ncols = min(5, k_total)
    nrows = math.ceil(k_total / ncols)
    fig = Figure(figsize=(3.2 * ncols, 3.0 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")
    for k, row in enumerate(metrics.per_class):
        ax = axes[k // ncols][k % ncols]
        ax.set_title(f"{row.name} (n={row.num_gt})", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if (prec[:, :, k] < 0).all():
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes, color="gray")
            continue
        for color, iou in zip(colors, iou_thrs):
            t = int(np.flatnonzero(np.isclose(metrics.iou_thrs, iou))[0])
            p = prec[t, :, k]
            ap = float(p[p > -1].mean())
            ax.plot(rec, np.clip(p, 0, None), color=color, lw=1.5, label=f"IoU {iou:.2f}: AP {ap:.3f}")
        mean_p = np.clip(prec[:, :, k], 0, None).mean(axis=0)
        ax.plot(rec, mean_p, color="black", lw=1.2, ls="--", label=f"IoU .50:.95: AP {row.AP:.3f}")
        ax.legend(fontsize=7, loc="upper right")
    for k in range(k_total, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("recall")
    for ax in axes[:, 0]:
        ax.set_ylabel("precision")
    fig.suptitle(title or f"Precision-recall per class (AP {metrics.AP:.3f}, AP50 {metrics.AP50:.3f})")
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    return path


def plot_training_curves(history: Sequence[Sequence[float]], term_names: Sequence[str],
                         evals: Sequence[Mapping[str, Any]], path: str | os.PathLike, window: int = 20) -> Path:
    """Training's ``train_curves.png``: loss terms per iteration (light) with their moving average (dark), the
    learning rate, and mAP / AP50 per evaluation (EMA weights).

    ``history`` rows: (iteration, one value per name in ``term_names``, lr); ``evals``: dicts with ``epoch``,
    ``mAP`` and ``AP50``. Returns the written path.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.6), dpi=110, layout="constrained")
    ax_loss, ax_lr, ax_map = fig.subplots(1, 3)
    h = np.asarray(history, dtype=np.float64).reshape(-1, 2 + len(term_names))
    for col, name in enumerate(term_names, start=1):
        if not len(h):
            break
        line, = ax_loss.plot(h[:, 0], h[:, col], alpha=0.25, linewidth=0.8)
        k = max(1, min(window, len(h) // 5 or 1))
        smooth = np.convolve(h[:, col], np.ones(k) / k, mode="valid")
        ax_loss.plot(h[k - 1:, 0], smooth, color=line.get_color(), label=name)
    ax_loss.set(title="training loss", xlabel="iteration")
    if len(h):
        ax_loss.legend(fontsize=8)
        ax_lr.plot(h[:, 0], h[:, -1])
    ax_lr.set(title="learning rate", xlabel="iteration")
    if evals:
        epochs = [e["epoch"] for e in evals]
        for key in ("mAP", "AP50"):
            ax_map.plot(epochs, [e[key] for e in evals], marker="o", label=key)
        ax_map.legend(fontsize=8)
    ax_map.set(title="evaluation (EMA weights)", xlabel="epoch")
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    return path
