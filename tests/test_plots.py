"""gptnb.plots: text inside a figure does not overlap or leave it, at the sizes the notebooks draw them."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gptnb import plots  # noqa: E402


def test_side_by_side_titles_do_not_overlap():
    runs = pd.DataFrame({"k": [0, 1, 1, 2, 2], "accuracy": np.linspace(0.4, 0.6, 5), "macro_f1": np.linspace(0, 1, 5)})
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))  # notebook 02, section 5
    plots.accuracy_vs_shots(runs, ("accuracy",), ax=axes[0])
    plots.accuracy_vs_shots(runs, ("macro_f1",), metric="macro-F1", ax=axes[1])
    fig.canvas.draw()
    left, right = (ax.title.get_window_extent() for ax in axes)
    assert not left.overlaps(right), (left, right)
    plt.close(fig)


def test_fit_title_keeps_the_given_line_breaks_and_wraps_long_lines():
    fig, ax = plt.subplots(figsize=(4, 3))
    plots.fit_title(ax, "short\na title far too long for four inches of figure, wrapped to fit")
    lines = ax.get_title().splitlines()
    assert lines[0] == "short" and len(lines) > 2
    plt.close(fig)


def test_grouped_bars_legend_stays_inside_its_axes():
    table = pd.DataFrame(
        {"predicted_positive": [0.95, 1.0], "calibrated_predicted_positive": [0.62, 0.65]}, index=["a b", "b a"]
    )
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))  # notebook 02, section 6
    for ax in axes:
        plots.grouped_bars(table, list(table), "share", "Order", reference=0.5, reference_label="gold share", ax=ax)
    fig.canvas.draw()
    for ax in axes:
        legend, frame = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert frame.x0 <= legend.x0 and legend.x1 <= frame.x1, (legend, frame)
    plt.close(fig)


def test_sampling_filters_puts_two_panels_a_row():
    tokens, before = ["a", "b", "c"], np.array([0.5, 0.3, 0.2])
    after = {f"setting {k}": before for k in range(4)}  # notebook 03's four settings
    axes = plots.sampling_filters(tokens, before, after)
    figure = axes[0].figure
    assert len(axes) == 4 and figure.get_figwidth() <= 10, figure.get_size_inches()
    assert [ax.get_ylabel() for ax in axes] == ["next token", "", "next token", ""]
    plt.close(figure)


def test_family_sizes_labels_stay_inside_the_frame():
    table = pd.DataFrame(
        {
            "model": ["GPT-1", "GPT-3 175B", "SmolLM2-135M"],
            "year": [2018, 2020, 2024],
            "open_weights": [True, False, True],
            "computed_params": [1.2e8, 1.75e11, 1.35e8],
        }
    )
    ax = plots.family_sizes(table)
    ax.figure.canvas.draw()
    frame = ax.get_window_extent()
    assert all(text.get_window_extent().x1 < frame.x1 for text in ax.texts)
    plt.close(ax.figure)


def test_loss_curves_legend_sits_under_the_axes_not_over_the_curves():
    log = [{"step": step, "loss": 11 - 0.06 * step} for step in range(1, 21)] + [{"step": 20, "eval_loss": 9.7}]
    ax = plots.loss_curves(log, label="ft:tiny-gpt2:tweets:ec61f97b")  # notebook 05's model id
    ax.figure.canvas.draw()
    assert ax.get_legend().get_window_extent().y1 < ax.get_window_extent().y0
    plt.close(ax.figure)
