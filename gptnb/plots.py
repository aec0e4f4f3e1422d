"""Shared matplotlib helpers: every plot labelled, every function returns its Axes."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def attention_map(weights, tokens, title: str = "Causal attention", ax=None):
    """Heatmap of a (query x key) matrix such as a causal mask or attention weights, tokens on both axes.

    Row i is the token at position i looking back; column j the token it may attend to.
    """
    weights = np.asarray(weights, dtype=float)
    ax = ax or plt.subplots(figsize=(1.0 + 0.7 * len(tokens), 0.6 + 0.6 * len(tokens)))[1]
    image = ax.imshow(weights, cmap="Blues", vmin=0, vmax=max(1.0, weights.max()))
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    labels = [repr(token)[1:-1] for token in tokens]  # show spaces and newlines
    ax.set_xticks(range(len(tokens)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(tokens)), labels)
    for (row, col), value in np.ndenumerate(weights):
        ax.text(col, row, f"{value:.2f}".rstrip("0").rstrip("."), ha="center", va="center", fontsize=8,
                color="white" if value > 0.6 * max(1.0, weights.max()) else "black")
    ax.set_xlabel("key: position attended to (earlier or same)")
    ax.set_ylabel("query: position predicting the next token")
    ax.set_title(title)
    return ax


def family_sizes(table, ax=None):
    """Parameter count against year, log scale, one labelled point per model of the family table.

    `table` needs columns model, year, open_weights and computed_params (or reported_params).
    """
    column = "computed_params" if "computed_params" in table else "reported_params"
    ax = ax or plt.subplots(figsize=(9, 5.5))[1]
    for open_weights, marker, label in [(True, "o", "open weights"), (False, "s", "no public weights")]:
        rows = table[table["open_weights"] == open_weights]
        ax.scatter(rows["year"], rows[column], marker=marker, s=50, label=label, zorder=3)
    for _, row in table.iterrows():
        ax.annotate(row["model"], (row["year"], row[column]), xytext=(7, -3), textcoords="offset points", fontsize=9)
    ax.set_yscale("log")
    ax.set_xticks(range(table["year"].min(), table["year"].max() + 1))
    ax.set_xlim(table["year"].min() - 0.5, table["year"].max() + 1.2)
    ax.set_xlabel("year released")
    ax.set_ylabel(f"parameters ({column.replace('_params', '')}, log scale)")
    ax.set_title("The GPT family: size by year")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left")
    return ax
