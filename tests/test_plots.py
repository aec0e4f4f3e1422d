"""gptnb.plots: text inside a figure does not overlap or leave it, at the sizes the notebooks draw them.

`FIGURES` draws every figure of the five notebooks as its notebook does (the same calls, sizes and layout, with
inputs like the notebooks' in the tiny and cpu profiles); `text_problems` finds any text that leaves the figure or
runs into another text.
"""

import contextlib
import inspect
from unittest import mock

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from gptnb import plots  # noqa: E402
from gptnb.family import load_family_table  # noqa: E402

TOLERANCE = 1.0  # pixels: texts that touch do not overlap


def drawn_texts(figure) -> list[Text]:
    """The non-empty texts `figure` draws (titles, labels, tick labels, legends, notes), after its layout ran."""
    drawn, draw = [], Text.draw

    def record(text, renderer):
        draw(text, renderer)
        if text.get_visible() and text.get_text().strip():
            drawn.append(text)

    with mock.patch.object(Text, "draw", record):
        figure.canvas.draw()
    return drawn


def outline(text: Text, renderer) -> np.ndarray:
    """The four corners (pixels) of `text`'s box, turned with the text (a tick label at 45 degrees)."""
    turned, rotation = Text.get_window_extent(text, renderer), text.get_rotation()  # an annotation's arrow left out
    text.set_rotation(0)
    flat = Text.get_window_extent(text, renderer)
    text.set_rotation(rotation)
    angle = np.deg2rad(rotation)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [flat.width / 2, flat.height / 2]
    return (half @ turn.T) + [(turned.x0 + turned.x1) / 2, (turned.y0 + turned.y1) / 2]


def overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two convex outlines overlap by more than `TOLERANCE` (no side of either separates them)."""
    for corners in (a, b):
        for edge in np.diff(np.vstack([corners, corners[:1]]), axis=0):
            normal = np.array([-edge[1], edge[0]]) / np.hypot(*edge)
            on_a, on_b = a @ normal, b @ normal
            if min(on_a.max(), on_b.max()) - max(on_a.min(), on_b.min()) <= TOLERANCE:
                return False
    return True


def text_problems(figure) -> list[str]:
    """Each text of `figure` that leaves it, and each pair of its texts that overlap, as a sentence."""
    texts = drawn_texts(figure)
    renderer = figure.canvas.get_renderer()
    outlines = [outline(text, renderer) for text in texts]
    width, height = figure.bbox.width, figure.bbox.height
    problems = [
        f"{text.get_text()!r} leaves the figure"
        for text, corners in zip(texts, outlines)
        if (corners < -TOLERANCE).any()
        or (corners[:, 0] > width + TOLERANCE).any()
        or (corners[:, 1] > height + TOLERANCE).any()
    ]
    for i, (text, corners) in enumerate(zip(texts, outlines)):
        for other, its_corners in zip(texts[i + 1 :], outlines[i + 1 :]):
            if overlap(corners, its_corners):
                problems.append(f"{text.get_text()!r} overlaps {other.get_text()!r}")
    return problems


GPT2_TOKENS = ["The", " cat", " sat", " on", " the", " mat"]  # notebook 01's sentence, GPT-2's tokenizer
# The 12 likeliest next tokens after "The meaning of life is" (notebook 03): SmolLM2-135M (cpu), tiny-gpt2 (tiny).
CPU_NEXT = {" not": 0.0996, " a": 0.0912, " often": 0.0785, " something": 0.0315, " subjective": 0.0299}
CPU_NEXT |= {" multifaceted": 0.0299, " that": 0.0288, " the": 0.0252, " to": 0.0243, " infinite": 0.0181}
CPU_NEXT |= {' "': 0.0170, " inext": 0.0133}
TINY_NEXT = " is|imen|ealing|ription| Crane| Dynam|Fac|etheus| Cry| bottled| Archdemon| synaptic".split("|")
LOCAL_FT_ID, OPENAI_FT_ID = "ft:gpt2:tweets:ec61f97b", "ft:gpt-4o-mini-2024-07-18:personal:tweets:AbCd1234"
LABELS = ("negative", "positive")


def causal(n: int) -> np.ndarray:
    """An n x n causal mask (1 below and on the diagonal)."""
    return np.tril(np.ones((n, n)))


def attention_weights(n: int) -> np.ndarray:
    """Random scores, masked and softmaxed as notebook 01 does."""
    scores = np.where(causal(n) > 0, np.random.default_rng(0).normal(size=(n, n)), -np.inf)
    return np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)


def shot_runs(shots=(0, 1, 2, 4, 8), draws: int = 3) -> pd.DataFrame:
    """Notebook 02's sweep (k = 0 once, every other k `draws` times) with random scores."""
    rng = np.random.default_rng(0)
    runs = pd.DataFrame([(k, d) for k in shots for d in range(1 if k == 0 else draws)], columns=["k", "draw"])
    for column in ["accuracy", "calibrated_accuracy", "macro_f1", "calibrated_macro_f1", "predicted_positive"]:
        runs[column] = rng.uniform(0.3, 0.9, len(runs))
    runs["calibrated_predicted_positive"] = rng.uniform(0.3, 0.7, len(runs))
    runs["positive_examples"] = np.where(runs.k > 0, rng.integers(0, 3, len(runs)) / 2, np.nan)
    return runs


def scores(index) -> pd.DataFrame:
    """Notebook 02's summary of each prompt variant in `index` (random shares between 0.45 and 1)."""
    columns = ["accuracy", "calibrated_accuracy", "predicted_positive", "calibrated_predicted_positive"]
    values = np.random.default_rng(0).uniform(0.45, 1.0, (len(index), len(columns)))
    return pd.DataFrame(values, index=index, columns=columns)


def log_history(steps: int, epochs: int) -> list[dict]:
    """A `transformers.Trainer` log: a training loss every step, a validation loss each epoch."""
    noise = np.random.default_rng(0).random(steps)
    log = [{"step": step, "loss": 4 * np.exp(-step / steps) + 0.1 * noise[step - 1]} for step in range(1, steps + 1)]
    return log + [{"step": steps * (e + 1) // epochs, "eval_loss": 2.0 - 0.3 * e} for e in range(epochs)]


def tweet_lengths(low: int, high: int, n: int) -> np.ndarray:
    """Tokens per training example, as notebooks 04 and 05 count them."""
    return np.random.default_rng(0).integers(low, high, n)


def notebook_02_section_5(runs):
    """Notebook 02, section 5: accuracy and macro-F1 against k, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    plots.accuracy_vs_shots(runs, ("accuracy", "calibrated_accuracy"), ax=axes[0])
    plots.accuracy_vs_shots(runs, ("macro_f1", "calibrated_macro_f1"), metric="macro-F1", ax=axes[1])
    return fig


def notebook_02_majority_label():
    """Notebook 02, section 6: the majority-label scatter it draws with pandas."""
    shots = shot_runs().query("k > 0")
    ax = shots.plot.scatter(x="positive_examples", y="predicted_positive", label="plain", figsize=(6, 4))
    shots.plot.scatter(
        x="positive_examples", y="calibrated_predicted_positive", color="tab:orange", label="calibrated", ax=ax
    )
    ax.axhline(0.47, color="gray", linestyle="--", label="gold share")
    ax.set(xlabel="share of positive examples in the prompt", ylabel="share of tweets predicted positive")
    ax.set_title("Majority-label bias")
    ax.legend()
    return ax.figure


def notebook_02_recency(draws: int):
    """Notebook 02, section 6: the recency bars, one pair of training tweets a group."""
    table = scores([f"pair {pair}" for pair in range(draws)])
    pulls = pd.concat([table.assign(order="negative last"), table.assign(order="positive last")])
    pulls = pulls.rename_axis("pair").reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    for ax, column, title in [
        (axes[0], "predicted_positive", "Recency: plain"),
        (axes[1], "calibrated_predicted_positive", "Recency: calibrated"),
    ]:
        table = pulls.pivot(index="pair", columns="order", values=column)
        xlabel = "one negative and one positive training tweet"
        ylabel = "share of tweets predicted positive"
        plots.grouped_bars(
            table, list(table), ylabel, title, xlabel=xlabel, reference=0.47, reference_label="gold share", ax=ax
        )
    return fig


def notebook_02_bars(index, title: str, xlabel: str):
    """Notebook 02, section 6: the order and the label-words cells' pairs of grouped bars."""
    return plots.accuracy_and_share(scores(index), title, xlabel, gold_share=0.47)


def notebook_03_next_tokens(tokens, probabilities):
    """Notebook 03, section 2: the ten likeliest next tokens."""
    table = pd.DataFrame({"token": tokens[:10], "probability": probabilities[:10]})
    return plots.token_probabilities(table, title="Next token after 'The meaning of life is'").figure


def notebook_03_sampling(tokens, probabilities):
    """Notebook 03, section 4: twelve tokens before and after four sampling settings."""
    before = np.array(probabilities)
    flat = np.full(len(tokens), 1e-4)  # temperature 1.5 over a 50k vocabulary: tiny probabilities
    after = {"temperature 0.5": before * 1.5, "temperature 1.5": flat, "top-k 5": before * 2, "top-p 0.5": before * 4}
    title = "Next token after 'The meaning of life is': probabilities before and after each setting"
    return plots.sampling_filters(tokens, before, after, title=title)[0].figure


def notebook_03_global_and_local():
    """Notebook 03, section 6: GPT-Neo's global and local attention masks side by side."""
    n, window = 10, 4
    local = causal(n) * (np.arange(n)[:, None] - np.arange(n)[None, :] < window)
    positions = [f"t{i}" for i in range(n)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    plots.attention_map(causal(n), positions, title="global layer: every earlier token", ax=axes[0])
    plots.attention_map(local, positions, title=f"local layer: the last {window} tokens", ax=axes[1])
    return fig


def notebook_03_cache_timing(lengths):
    """Notebook 03, section 3: milliseconds per new token with and without the cache at the profile's lengths."""
    per_token = pd.DataFrame(
        {"no cache": [9.0 * (1 + n / 64) for n in lengths], "with cache": [8.0] * len(lengths)},
        index=pd.Index(lengths, name="tokens in the text"),
    )
    return plots.cache_timing(per_token)[0].figure


def notebook_04_confusion(n_test: int):
    """Notebook 04: label scoring's and generate-and-parse's confusion matrices side by side."""
    truth = np.random.default_rng(0).integers(0, 2, n_test)
    predicted, generated = truth.copy(), truth[:50].copy()
    predicted[:20], generated[:5], generated[5:8] = 1 - truth[:20], 1 - truth[:5], -1  # some wrong, some no label
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    plots.confusion_matrix(truth, predicted, LABELS, title="Label scoring, all test tweets", ax=axes[0])
    plots.confusion_matrix(truth[:50], generated, LABELS, title="Generate and parse, first 50", ax=axes[1])
    plt.tight_layout()
    return fig


def notebook_04_loss_curves(steps: int, epochs: int):
    """Notebook 04: the two fine-tunings' loss curves side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    plots.loss_curves(log_history(steps, epochs), label="label only", ax=axes[0])
    plots.loss_curves(log_history(steps, epochs), label="whole sequence", ax=axes[1])
    plt.tight_layout()
    return fig


def notebook_04_scores(model_name: str, n_test: int):
    """Notebook 04's last figure: six methods' test scores, the two baselines' macro-F1 without an interval."""
    methods = ["zero-shot", "best few-shot", "fine-tune (label only)", "fine-tune (whole sequence)"]
    rows = pd.DataFrame({"method": [*methods, "LoRA r=8 (label only)", "classification head"]})
    for metric in ("accuracy", "macro_f1"):
        rows[metric] = np.random.default_rng(0).uniform(0.4, 0.9, len(rows))
        rows[f"{metric}_low"], rows[f"{metric}_high"] = rows[metric] - 0.06, rows[metric] + 0.05
    rows.loc[:1, ["macro_f1_low", "macro_f1_high"]] = np.nan
    return plots.scores_with_intervals(rows, title=f"{model_name}: test scores by method ({n_test} tweets)").figure


def notebook_05_workflow():
    """Notebook 05, section 5: the fine-tuning API's steps."""
    steps = [("CSV", "prompt,\ncompletion"), ("prepare", "gptnb\nprepare-data"), ("upload", "files.create")]
    steps += [
        ("job", "fine_tuning.\njobs.create"),
        ("events", "jobs.\nlist_events"),
        ("ft: model", "chat.\ncompletions"),
    ]
    return plots.workflow(steps, title="Fine-tuning through an API: the steps of section 5").figure


def notebook_05_confusion(model_id: str, labels=LABELS):
    """Notebook 05's confusion matrix of the fine-tuned model, some answers without a label."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, len(labels), 300)
    predicted = np.where(rng.random(300) < 0.1, -1, truth)
    return plots.confusion_matrix(list(truth), list(predicted), labels, title=f"{model_id} on the test split").figure


# Every figure of the five notebooks (in each profile where its size or text differs): name -> a function drawing it.
FIGURES = {
    "01 gpt_block_diagram": lambda: plots.gpt_block_diagram().figure,
    "01 causal mask": lambda: (
        plots.attention_map(causal(6), GPT2_TOKENS, title="Causal mask: 1 = may attend, 0 = future, hidden").figure
    ),
    "01 attention weights": lambda: (
        plots.attention_map(
            attention_weights(6), GPT2_TOKENS, title="Attention weights after the mask (random scores)"
        ).figure
    ),
    "01 local attention": lambda: (
        plots.attention_map(
            causal(6) - causal(6) * np.tri(6, k=-3), GPT2_TOKENS, title="GPT-Neo local attention: causal mask, window 3"
        ).figure
    ),
    "01 family_sizes": lambda: plots.family_sizes(load_family_table()).figure,
    "02 section 5 tiny": lambda: notebook_02_section_5(shot_runs((0, 1, 2, 4), draws=2)),
    "02 section 5 cpu": lambda: notebook_02_section_5(shot_runs()),
    "02 majority label": notebook_02_majority_label,
    "02 recency tiny": lambda: notebook_02_recency(2),
    "02 recency gpu": lambda: notebook_02_recency(5),
    "02 order": lambda: notebook_02_bars(
        ["neg neg pos pos", "pos pos neg neg", "neg pos neg pos"], "Order", "labels of the examples, in order"
    ),
    "02 label words": lambda: notebook_02_bars(["negative/positive", "bad/good", "0/1"], "Label words", "label words"),
    "03 token_probabilities cpu": lambda: notebook_03_next_tokens(list(CPU_NEXT), list(CPU_NEXT.values())),
    "03 token_probabilities tiny": lambda: notebook_03_next_tokens(TINY_NEXT, [6.6e-5] + [4.5e-5] * 11),
    "03 cache_timing cpu": lambda: notebook_03_cache_timing([16, 32, 64, 128]),
    "03 cache_timing gpu": lambda: notebook_03_cache_timing([128, 256, 512, 1000]),
    "03 sampling_filters cpu": lambda: notebook_03_sampling(list(CPU_NEXT), list(CPU_NEXT.values())),
    "03 sampling_filters tiny": lambda: notebook_03_sampling(TINY_NEXT, [4.5e-5] * 12),
    "03 global and local": notebook_03_global_and_local,
    "04 token_lengths": lambda: plots.token_lengths(tweet_lengths(20, 60, 400), 96).figure,
    "04 confusion matrices": lambda: notebook_04_confusion(300),
    "04 loss curves tiny": lambda: notebook_04_loss_curves(10, 2),
    "04 loss curves cpu": lambda: notebook_04_loss_curves(150, 1),
    "04 scores_with_intervals": lambda: notebook_04_scores("SmolLM2-135M", 300),
    "05 workflow": notebook_05_workflow,
    "05 token_lengths": lambda: (
        plots.token_lengths(tweet_lengths(40, 90, 200), 96, title="Tokens per training example (gpt2 tokenizer)").figure
    ),
    "05 loss_curves local": lambda: plots.loss_curves(log_history(60, 3), label=LOCAL_FT_ID).figure,
    "05 loss_curves openai": lambda: plots.loss_curves(log_history(60, 3), label=OPENAI_FT_ID).figure,
    "05 confusion local": lambda: notebook_05_confusion(LOCAL_FT_ID),
    "05 confusion openai": lambda: notebook_05_confusion(OPENAI_FT_ID),
    "05 confusion 3 classes": lambda: notebook_05_confusion(OPENAI_FT_ID, ("negative", "neutral", "positive")),
}


@pytest.mark.parametrize("draw", FIGURES.values(), ids=FIGURES.keys())
def test_no_text_leaves_the_figure_or_runs_into_another(draw):
    figure = draw()
    try:
        assert not text_problems(figure)
    finally:
        plt.close(figure)


def test_every_plotting_function_draws_one_of_the_figures_here():
    functions = [
        name
        for name, function in inspect.getmembers(plots, inspect.isfunction)
        if function.__module__ == plots.__name__ and not name.startswith("_")
    ]
    with contextlib.ExitStack() as stack:
        spies = {
            name: stack.enter_context(mock.patch.object(plots, name, wraps=getattr(plots, name))) for name in functions
        }
        for draw in FIGURES.values():
            plt.close(draw())
    assert not [name for name, spy in spies.items() if not spy.called]


def test_the_check_finds_overlapping_and_clipped_text():
    fig, axes = plt.subplots(1, 2, figsize=(7, 3))  # 02 section 5's titles before fit_title: they ran together
    for ax in axes:
        ax.set_title("Few-shot macro-F1 vs number of examples (shaded: min-max over draws)")
    fig.text(0.95, 0.5, "a note running off the right edge")
    fig.text(0.3, 0.3, "one note", rotation=45)
    fig.text(0.32, 0.32, "another", rotation=45)
    problems = text_problems(fig)
    plt.close(fig)
    assert any("overlaps" in problem and "macro-F1" in problem for problem in problems), problems
    assert "'a note running off the right edge' leaves the figure" in problems, problems
    assert "'one note' overlaps 'another'" in problems, problems


def test_turned_labels_that_only_look_close_do_not_overlap():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.set_xticks(
        range(6), [" something", " subjective", " multifaceted", " infinite", " often", " inext"], rotation=45
    )
    fig.tight_layout()
    problems = text_problems(fig)
    plt.close(fig)
    assert not problems, problems


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
    ax = plots.family_sizes(load_family_table())
    ax.figure.canvas.draw()
    frame = ax.get_window_extent()
    assert all(text.get_window_extent().x1 < frame.x1 for text in ax.texts)
    plt.close(ax.figure)


def test_loss_curves_legend_sits_under_the_axes_not_over_the_curves():
    ax = plots.loss_curves(log_history(20, 1), label="ft:tiny-gpt2:tweets:ec61f97b")  # notebook 05's model id
    ax.figure.canvas.draw()
    assert ax.get_legend().get_window_extent().y1 < ax.get_window_extent().y0
    plt.close(ax.figure)
