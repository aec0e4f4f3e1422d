"""Shared matplotlib helpers: every plot labelled, every function returns its Axes.

One function per figure of the five notebooks, each kept whole so that it reads top to bottom. Over 300 lines for that
reason (the GPT block diagram's boxes and notes alone, data kept beside the code that draws them, are about 50).
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.font_manager import FontProperties


def fit_title(ax, title: str):
    """Set `title` wrapped to its Axes' width, so that titles of side-by-side subplots do not run into each other."""
    size = FontProperties(size=plt.rcParams["axes.titlesize"]).get_size_in_points()
    width = ax.get_position().width * ax.figure.get_figwidth() * 72  # points
    chars = max(20, int(width / (0.6 * size)))  # an average character is about 0.6 em wide
    ax.set_title("\n".join(textwrap.fill(line, width=chars) for line in title.splitlines()))


def attention_map(weights, tokens, title: str = "Causal attention", ax=None):
    """Heatmap of a (query x key) matrix such as a causal mask or attention weights, tokens on both axes.

    Row i is the token at position i looking back; column j the token it may attend to.
    """
    weights = np.asarray(weights, dtype=float)
    ax = ax or plt.subplots(figsize=(1.0 + 0.7 * len(tokens), 0.6 + 0.6 * len(tokens)), layout="constrained")[1]
    image = ax.imshow(weights, cmap="Blues", vmin=0, vmax=max(1.0, weights.max()))
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    labels = [repr(token)[1:-1] for token in tokens]  # show spaces and newlines
    ax.set_xticks(range(len(tokens)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(tokens)), labels)
    for (row, col), value in np.ndenumerate(weights):
        ax.text(
            col,
            row,
            f"{value:.2f}".rstrip("0").rstrip("."),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if value > 0.6 * max(1.0, weights.max()) else "black",
        )
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
    ax.set_xlim(table["year"].min() - 0.5, table["year"].max() + 1.6)  # room for the last year's labels
    ax.set_xlabel("year released")
    ax.set_ylabel(f"parameters ({column.replace('_params', '')}, log scale)")
    ax.set_title("The GPT family: size by year")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left")
    return ax


def token_probabilities(table, title: str = "Next-token probabilities", ax=None):
    """Horizontal bars of the most likely next tokens; `table` has columns token and probability."""
    ax = ax or plt.subplots(figsize=(7, 0.5 + 0.35 * len(table)), layout="constrained")[1]
    labels = [repr(token)[1:-1] for token in table["token"]]  # show leading spaces and newlines
    ax.barh(range(len(table)), table["probability"], color="tab:blue")
    ax.set_yticks(range(len(table)), labels)
    ax.invert_yaxis()  # most likely on top
    for row, value in enumerate(table["probability"]):
        ax.text(value, row, f" {value:.1%}" if value >= 1e-3 else f" {value:.1e}", va="center", fontsize=8)
    ax.set_xlabel("probability of being the next token")
    ax.set_ylabel("token")
    ax.set_title(title)
    return ax


# The three variants `gpt_block_diagram` marks, and their colours.
BLOCK_VARIANTS = {"GPT-2": "tab:blue", "GPT-Neo": "tab:orange", "Llama-style (SmolLM2)": "tab:green"}


# The diagram's boxes, bottom to top: (y, label, face colour).
BLOCK_BOXES = [
    (0.5, "input tokens (ids)", "white"),
    (1.7, "token embedding  +  position embedding", "#dbe9f6"),
    (3.5, "norm", "#eeeeee"),
    (4.6, "masked self-attention", "#fde2c8"),
    (5.7, "+  (residual: add the block's input)", "white"),
    (6.9, "norm", "#eeeeee"),
    (8.0, "MLP (feed-forward)", "#d9f0d3"),
    (9.1, "+  (residual)", "white"),
    (10.7, "final norm", "#eeeeee"),
    (11.9, "LM head: a score (logit) per vocabulary token", "#dbe9f6"),
]
# Beside a box's height: what each family does there.
BLOCK_NOTES = [
    (
        1.7,
        {
            "GPT-2": "learned position table, added to the token embedding",
            "GPT-Neo": "the same",
            "Llama-style (SmolLM2)": "no position table: rotary positions rotate q and k inside attention",
        },
    ),
    (
        3.5,
        {
            "GPT-2": "pre-LayerNorm: LayerNorm before each sublayer",
            "GPT-Neo": "the same",
            "Llama-style (SmolLM2)": "pre-RMSNorm: rescale only (no mean, no shift)",
        },
    ),
    (
        4.6,
        {
            "GPT-2": "global: every earlier token, every layer",
            "GPT-Neo": "global and local (last `window_size` tokens) layers alternating",
            "Llama-style (SmolLM2)": "global, grouped-query (heads share keys/values)",
        },
    ),
    (8.0, {"GPT-2": "4x wider, GELU", "GPT-Neo": "the same", "Llama-style (SmolLM2)": "SwiGLU: gated, three matrices"}),
    (
        11.3,
        {
            "GPT-2": "tied: the token embedding matrix reused",
            "GPT-Neo": "tied",
            "Llama-style (SmolLM2)": "tied in SmolLM2-135M (larger Llamas: separate)",
        },
    ),
]


def gpt_block_diagram(ax=None):
    """A GPT drawn as boxes, input at the bottom: embeddings, N x (norm, masked self-attention, residual,
    norm, MLP, residual), final norm, LM head (`BLOCK_BOXES`); beside each part, how GPT-2, GPT-Neo and
    Llama-style models (SmolLM2) differ there, one colour per family (`BLOCK_NOTES`, `BLOCK_VARIANTS`)."""
    ax = ax or plt.subplots(figsize=(13, 9))[1]
    x, width = 0.3, 4.4
    _draw_block_boxes(ax, x, width)
    for y, by_family in BLOCK_NOTES:
        for row, (family, text) in enumerate(by_family.items()):
            ax.text(
                5.3,
                y + 0.35 - 0.35 * row,
                f"{family}: {text}",
                color=BLOCK_VARIANTS[family],
                ha="left",
                va="center",
                fontsize=9,
            )
        ax.plot([x + width + 0.55, 5.2], [y, y], color="lightgrey", linewidth=0.8)
    ax.set_xlim(-0.9, 12.6)
    ax.set_ylim(0, 12.6)
    ax.axis("off")
    ax.set_title("A GPT, bottom to top; coloured notes: where GPT-2, GPT-Neo and Llama-style models differ")
    return ax


def _draw_block_boxes(ax, x: float, width: float, height: float = 0.7) -> None:
    """`BLOCK_BOXES` joined by arrows, the repeated blocks framed, and the two residual paths."""
    from matplotlib.patches import FancyBboxPatch

    frame = FancyBboxPatch(
        (x - 0.2, 2.9), width + 0.4, 6.85, boxstyle="round,pad=0.05", fill=False, linestyle="--", edgecolor="grey"
    )
    ax.add_patch(frame)
    ax.text(x - 0.35, 6.3, "N x\nblocks", ha="right", va="center", fontsize=11, fontweight="bold")
    for (y, label, colour), (next_y, _, _) in zip(BLOCK_BOXES, BLOCK_BOXES[1:] + [(13.0, "", "")]):
        ax.add_patch(
            FancyBboxPatch(
                (x, y - height / 2), width, height, boxstyle="round,pad=0.03", facecolor=colour, edgecolor="black"
            )
        )
        ax.text(x + width / 2, y, label, ha="center", va="center", fontsize=9.5)
        ax.annotate(
            "", (x + width / 2, next_y - height / 2), (x + width / 2, y + height / 2), arrowprops={"arrowstyle": "->"}
        )
    for start, end in [(2.95, 5.7), (6.2, 9.1)]:  # residual paths: around norm and sublayer, into the "+"
        ax.annotate(
            "",
            (x + width, end),
            (x + width, start),
            arrowprops={"arrowstyle": "->", "connectionstyle": "arc3,rad=-0.5", "color": "grey"},
        )


def sampling_filters(
    tokens, before, after: dict, title: str = "How sampling settings reshape the next-token distribution", axes=None
):
    """Bars of the same next tokens' probabilities before (grey) and after each setting (one panel each).

    `before` and every value of `after` are probabilities of `tokens`, each renormalised over the whole
    vocabulary; a token a filter removed has probability 0.
    """
    if axes is None:  # two panels a row: four in one row shrink to unreadable text in a notebook's width
        columns, rows = min(2, len(after)), -(-len(after) // 2)
        height = rows * (1.2 + 0.32 * len(tokens))
        grid = plt.subplots(rows, columns, figsize=(4.6 * columns, height), sharey=True, layout="constrained")[1]
        axes = np.atleast_1d(grid).ravel()
        for ax in axes[len(after) :]:
            ax.set_visible(False)
        axes = axes[: len(after)]
    axes = np.atleast_1d(axes)
    labels = [repr(token)[1:-1] for token in tokens]
    rows = np.arange(len(tokens))
    for ax, (name, probabilities) in zip(axes, after.items()):
        ax.barh(rows - 0.2, before, height=0.4, color="lightgrey", label="before")
        ax.barh(rows + 0.2, probabilities, height=0.4, color="tab:blue", label="after")
        ax.set_yticks(rows, labels)
        ax.locator_params(axis="x", nbins=4)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))  # a flat distribution has tiny probabilities
        ax.set_xlabel("probability")
        ax.set_title(name)
        ax.legend(loc="lower right")
    axes[0].invert_yaxis()  # most likely on top (the panels share this axis)
    for ax in axes:
        spec = ax.get_subplotspec()
        if spec is None or spec.is_first_col():
            ax.set_ylabel("next token")
    axes[0].figure.suptitle(title)
    return axes


def accuracy_vs_shots(runs, columns=("accuracy",), metric: str = "accuracy", ax=None):
    """A score against the number of examples in the prompt: one point per draw, the mean as a line,
    the min-max range shaded. `runs` has a column k and each of `columns`; `metric` names the score."""
    ax = ax or plt.subplots(figsize=(7, 4.5))[1]
    for column in columns:
        summary = runs.groupby("k")[column].agg(["mean", "min", "max"])
        line = ax.plot(summary.index, summary["mean"], marker="o", label=f"{column.replace('_', ' ')} (mean of draws)")[
            0
        ]
        ax.fill_between(summary.index, summary["min"], summary["max"], color=line.get_color(), alpha=0.15)
        ax.scatter(runs["k"], runs[column], color=line.get_color(), s=12, alpha=0.6)
    ax.set_xticks(sorted(runs["k"].unique()))
    ax.set_xlabel("k: examples in the prompt")
    ax.set_ylabel(metric)
    fit_title(ax, f"Few-shot {metric} vs number of examples\n(shaded: min-max over draws)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax


def grouped_bars(
    table,
    columns,
    ylabel: str,
    title: str,
    xlabel: str = "",
    reference: float | None = None,
    reference_label: str = "",
    ax=None,
):
    """One group of bars per row of `table` (its index names the group), one bar per column, values (scores or
    shares between 0 and 1) written on top; `reference` draws a dashed line (e.g. the gold share of positives)."""
    ax = ax or plt.subplots(figsize=(1.5 + 1.4 * len(table), 4))[1]
    width = 0.8 / len(columns)
    for i, column in enumerate(columns):
        x = np.arange(len(table)) + (i - (len(columns) - 1) / 2) * width
        bars = ax.bar(x, table[column], width, label=column.replace("_", " "))
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle="--", label=reference_label or None)
    ax.set_xticks(range(len(table)), [str(name) for name in table.index])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fit_title(ax, title)
    # As many legend columns as fit in the Axes (an entry: a 2.5 em handle and about 0.6 em a character, at 8 pt).
    labels = ax.get_legend_handles_labels()[1]
    width = ax.get_position().width * ax.figure.get_figwidth() * 72
    needed = sorted(8 * (2.5 + 0.6 * len(label)) for label in labels)
    ncol = max([k for k in range(1, len(labels) + 1) if sum(needed[-k:]) <= 0.95 * width] or [1])
    rows = -(-len(labels) // ncol)
    ax.set_ylim(0, 1.2 + 0.1 * rows)  # room for the legend above bars that reach 1
    ax.legend(fontsize=8, loc="upper left", ncol=ncol)
    return ax


def accuracy_and_share(table, title: str, xlabel: str, gold_share: float):
    """Notebook 02's two panels for one prompt change, a row of `table` per variant: accuracy, then the share of
    tweets predicted positive beside `gold_share`, each plain and calibrated (`grouped_bars`). Returns the figure."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    accuracy, share = "accuracy on the validation tweets", "share of tweets predicted positive"
    grouped_bars(table, ["accuracy", "calibrated_accuracy"], accuracy, f"{title}: accuracy", xlabel=xlabel, ax=axes[0])
    grouped_bars(
        table,
        ["predicted_positive", "calibrated_predicted_positive"],
        share,
        f"{title}: {share}",
        xlabel=xlabel,
        reference=gold_share,
        reference_label="gold share",
        ax=axes[1],
    )
    return fig


def token_lengths(lengths, max_length: int | None = None, title: str = "Tokens per training example", ax=None):
    """Histogram of tokens per example, with the truncation length marked when given."""
    ax = ax or plt.subplots(figsize=(7, 3.5), layout="constrained")[1]
    ax.hist(lengths, bins=30, color="tab:blue")
    if max_length:
        ax.axvline(max_length, color="tab:red", linestyle="--", label=f"max_length = {max_length}")
        ax.legend()
    ax.set_xlabel("tokens (prompt + label + end of text)")
    ax.set_ylabel("examples")
    ax.set_title(title)
    return ax


def loss_curves(log_history, label: str = "", ax=None):
    """Training loss per logged step and validation loss per epoch, from a `transformers.Trainer` log."""
    ax = ax or plt.subplots(figsize=(7, 4), layout="constrained")[1]
    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    evals = [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry]
    prefix = f"{label}: " if label else ""
    line = ax.plot(*zip(*train), label=f"{prefix}training loss")[0] if train else None
    if evals:
        ax.plot(
            *zip(*evals),
            marker="o",
            linestyle="--",
            color=line.get_color() if line else None,
            label=f"{prefix}validation loss (each epoch)",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean cross-entropy per learned token)")
    ax.set_title("Loss curves")
    ax.grid(True, alpha=0.3)
    # Under the Axes, not over the curves: labels carry model names (notebook 05's ft: ids are long).
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False)
    return ax


def confusion_matrix(y_true, y_pred, labels, title: str = "Confusion matrix", ax=None):
    """Counts of (true label, predicted label); predictions of -1 (no label found) get their own column."""
    names = list(labels) + (["(none)"] if -1 in set(y_pred) else [])
    index = {i: i for i in range(len(labels))} | {-1: len(labels)}
    counts = np.zeros((len(labels), len(names)), dtype=int)
    for truth, predicted in zip(y_true, y_pred):
        counts[truth, index[predicted]] += 1
    ax = ax or plt.subplots(figsize=(1.5 + 1.1 * len(names), 1.2 + 1.0 * len(labels)), layout="constrained")[1]
    ax.imshow(counts, cmap="Blues")
    for (row, col), value in np.ndenumerate(counts):
        ax.text(
            col, row, str(value), ha="center", va="center", color="white" if value > 0.6 * counts.max() else "black"
        )
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    fit_title(ax, title)  # notebook 05's title carries the fine-tuned model's long id
    return ax


def workflow(steps, title: str = "Workflow", ax=None):
    """A left-to-right chain of boxes joined by arrows; `steps` are (name, detail) pairs, detail in small print."""
    ax = ax or plt.subplots(figsize=(2.0 * len(steps), 1.8))[1]
    for i, (name, detail) in enumerate(steps):
        ax.text(
            i,
            0.1,
            name,
            ha="center",
            va="center",
            fontsize=11,
            weight="bold",
            bbox={"boxstyle": "round,pad=0.5", "facecolor": "#dbe9f6", "edgecolor": "tab:blue"},
        )
        ax.text(i, -0.35, detail, ha="center", va="top", fontsize=8, family="monospace")
        if i:
            ax.annotate("", xy=(i - 0.42, 0.1), xytext=(i - 0.58, 0.1), arrowprops={"arrowstyle": "->", "lw": 1.5})
    ax.set_xlim(-0.6, len(steps) - 0.4)
    ax.set_ylim(-1.0, 0.6)
    ax.axis("off")
    ax.set_title(title)
    return ax


def scores_with_intervals(table, metrics=("accuracy", "macro_f1"), title: str = "Test scores", ax=None):
    """Horizontal bars of each row's `metrics` (rows named by the column method), with whiskers from the columns
    ``<metric>_low`` / ``<metric>_high`` (e.g. bootstrap 95 % intervals) where a row has them."""
    ax = ax or plt.subplots(figsize=(8, 1.2 + 0.55 * len(table) * len(metrics)), layout="constrained")[1]
    height = 0.8 / len(metrics)
    rows = np.arange(len(table))
    for i, metric in enumerate(metrics):
        values = table[metric].to_numpy(dtype=float)
        low = table[f"{metric}_low"].to_numpy(dtype=float) if f"{metric}_low" in table else np.full(len(table), np.nan)
        high = table[f"{metric}_high"].to_numpy(dtype=float) if f"{metric}_high" in table else low
        whiskers = np.nan_to_num(np.vstack([values - low, high - values]))  # no interval: no whisker
        y = rows + (i - (len(metrics) - 1) / 2) * height
        label = {"accuracy": "accuracy", "macro_f1": "macro-F1"}.get(metric, metric.replace("_", " "))
        bars = ax.barh(y, values, height, xerr=whiskers, capsize=3, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=8, label_type="center", color="white")
    ax.set_yticks(rows, [str(method) for method in table["method"]])
    ax.invert_yaxis()  # the first row on top
    ax.set_xlim(0, 1.15)
    ax.set_xlabel("score on the test tweets (whiskers: 95 % interval where known)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return ax


def cache_timing(per_token, title: str = "One new token, with and without the key/value cache", axes=None):
    """Left: the measured milliseconds per new token against the text's length, one line per column of
    `per_token` (indexed by length). Right: the seconds to grow the text from the first length to each length,
    the sum of those per-token times (trapezoids between the measured lengths)."""
    axes = axes if axes is not None else plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")[1]
    lengths = per_token.index.to_numpy(dtype=float)
    for column in per_token.columns:
        ms = per_token[column].to_numpy(dtype=float)
        axes[0].plot(lengths, ms, marker="o", label=column)
        grown = np.concatenate([[0.0], np.cumsum((ms[1:] + ms[:-1]) / 2 * np.diff(lengths))]) / 1000
        axes[1].plot(lengths, grown, marker="o", label=column)
    axes[0].set_ylabel("milliseconds per new token")
    axes[1].set_ylabel(f"seconds to grow the text from {int(lengths[0])} tokens")
    for ax in axes:
        ax.set_xlabel("tokens in the text")
        ax.set_ylim(bottom=0)
        ax.legend()
    axes[0].figure.suptitle(title)
    return axes
