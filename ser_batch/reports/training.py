"""Pictures and a small HTML page of a training run (matplotlib, no display needed)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Sequence


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], *, title: str, path: Path) -> Path:
    """Row-normalised confusion matrix with counts, saved as PNG."""
    import numpy as np

    plt = _pyplot()
    counts = np.asarray(confusion, dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(counts[i, j]), ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_f1(metrics: dict[str, dict[str, Any]], *, path: Path) -> Path:
    """Grouped bars of per-class F1, one group per class, one bar per model."""
    import numpy as np

    plt = _pyplot()
    names = list(metrics)
    classes = metrics[names[0]]["classes"]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    for k, name in enumerate(names):
        values = [metrics[name]["per_class"][c]["f1"] for c in classes]
        ax.bar(np.arange(len(classes)) + k * width, values, width, label=name)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_history(history: dict[str, list[float]], *, path: Path) -> Path:
    """Training and validation loss/accuracy of the Keras ANN per epoch."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, label in (("", "train"), ("val_", "validation")):
            if prefix + key in history:
                ax.plot(history[prefix + key], label=label)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def write_report(directory: Path, *, manifest: dict[str, Any], metrics: dict[str, dict[str, Any]],
                 history: dict[str, list[float]] | None) -> Path:
    """Write confusion PNGs, F1 bars, the ANN training curve and ``report.html`` into ``directory``."""
    directory = Path(directory)
    pictures = []
    for name, m in metrics.items():
        png = plot_confusion(m["confusion"], m["classes"], title=f"{name}: accuracy {m['accuracy']:.3f}",
                             path=directory / f"confusion_{name}.png")
        pictures.append((f"Confusion matrix: {name}", png))
    if metrics:
        pictures.append(("Per-class F1", plot_f1(metrics, path=directory / "f1_per_class.png")))
    if history:
        pictures.append(("Keras ANN training curve", plot_history(history, path=directory / "training_curve.png")))
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{m['accuracy']:.3f}</td><td>{m['macro_f1']:.3f}</td>"
        f"<td>{m['n']}</td></tr>" for name, m in metrics.items())
    split = manifest.get("split", {})
    data = manifest.get("training_data", {})
    body = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>ser-batch model report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .8em;text-align:right}}img{{max-width:100%}}</style></head>
<body><h1>ser-batch model report</h1>
<p>Recipe <b>{html.escape(str(manifest.get('features', {}).get('recipe')))}</b>,
{manifest.get('features', {}).get('n_features')} features at {manifest.get('features', {}).get('sample_rate')} Hz;
split <b>{html.escape(str(split.get('kind')))}</b> ({html.escape(str(split.get('description', '')))});
{data.get('rows_train')} training rows, {data.get('rows_test')} test rows, {data.get('error_rows', 0)} error rows dropped.
Classes: {html.escape(', '.join(manifest.get('classes', [])))}.</p>
<h2>Test metrics</h2>
{f'<table><tr><th>model</th><th>accuracy</th><th>macro-F1</th><th>n</th></tr>{rows}</table>' if metrics
 else '<p>No test part: every row was used for training (split "none").</p>'}
{''.join(f'<h2>{html.escape(title)}</h2>{_img(png)}' for title, png in pictures)}
<p><small>ser-batch {html.escape(str(manifest.get('ser_batch_version')))}, created {html.escape(str(manifest.get('created')))}.</small></p>
</body></html>
"""
    path = directory / "report.html"
    path.write_text(body, encoding="utf-8")
    return path
