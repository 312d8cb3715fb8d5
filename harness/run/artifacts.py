"""Files a run leaves beside its metrics: per-class report, confusion matrix, and learning curves."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from harness.run.summary import EPOCH_COLUMNS


def classification_report(confusion: torch.Tensor, classes: list[str]) -> list[dict]:
    """Precision, recall, F1 and support per class (plus macro and weighted averages) from a confusion matrix.

    Args:
        confusion: ``confusion[true, pred]`` counts.
        classes: class names, in label order.
    """
    c = confusion.double()
    tp = c.diag()
    support = c.sum(1)
    pred = c.sum(0)
    precision = torch.where(pred > 0, tp / pred.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    rows = [{"class": name, "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
             "support": int(support[i])} for i, name in enumerate(classes)]
    total = float(support.sum())
    rows.append({"class": "macro avg", "precision": float(precision.mean()), "recall": float(recall.mean()),
                 "f1": float(f1.mean()), "support": int(total)})
    w = support / max(total, 1.0)
    rows.append({"class": "weighted avg", "precision": float((precision * w).sum()),
                 "recall": float((recall * w).sum()), "f1": float((f1 * w).sum()), "support": int(total)})
    return rows


def write_artifacts(run_dir: Path, history: list[dict], confusion: torch.Tensor | None, classes: list[str]) -> None:
    """Write ``classification_report.csv``, ``confusion.csv``, ``confusion.png`` and ``curves.png``."""
    # matplotlib is heavy: imported only when a plot is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if confusion is not None:
        with open(run_dir / "classification_report.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["class", "precision", "recall", "f1", "support"])
            w.writeheader()
            for r in classification_report(confusion, classes):
                w.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in r.items()})
        with open(run_dir / "confusion.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["true\\pred", *classes])
            for name, row in zip(classes, confusion.tolist()):
                w.writerow([name, *row])
        fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(classes), 1 + 0.5 * len(classes)))
        im = ax.imshow(confusion.numpy(), cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("test confusion matrix")
        if len(classes) <= 20:
            vmax = float(confusion.max()) if confusion.numel() else 0.0
            for i in range(len(classes)):
                for j in range(len(classes)):
                    v = int(confusion[i, j])
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=6,
                            color="white" if v > vmax / 2 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        fig.savefig(run_dir / "confusion.png", dpi=110)
        plt.close(fig)
    if history:
        ep = [r["epoch"] for r in history]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
        a1.plot(ep, [r["train_loss"] for r in history], "o-", label="train")
        a1.plot(ep, [r["val_loss"] for r in history], "o-", label="val")
        a1.set_xlabel("epoch")
        a1.set_ylabel("loss")
        a1.legend()
        a2.plot(ep, [r["train_acc"] for r in history], "o-", label="train")
        a2.plot(ep, [r["val_acc"] for r in history], "o-", label="val")
        a2.set_xlabel("epoch")
        a2.set_ylabel("accuracy")
        a2.legend()
        fig.tight_layout()
        fig.savefig(run_dir / "curves.png", dpi=110)
        plt.close(fig)


def write_metrics(path: Path, history: list[dict]) -> None:
    """Write ``metrics.csv`` (one row per finished epoch) atomically: a reader sees the old or the new file."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=EPOCH_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    os.replace(tmp, path)
