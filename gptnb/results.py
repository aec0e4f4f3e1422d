"""Scores and the shared results table that notebooks 02, 04 and 05 add rows to.

Over 300 lines: the metric, its bootstrap intervals (one system, a paired difference, a difference clustered by
tweet) and the table share one resampling scheme and one row format; split, each part would import the others'.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from .files import replacing
from .paths import results_dir
from .profiles import get_profile

KEY = ["notebook", "method"]


def score(y_true, y_pred) -> dict:
    """Accuracy and macro-F1 (each class counts equally, whatever its share)."""
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def _macro_f1_rows(y_true: np.ndarray, y_pred: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Macro-F1 of every row of (resamples x examples) label arrays, as sklearn computes it (zero_division=0)."""
    f1 = []
    for c in classes:
        tp = ((y_pred == c) & (y_true == c)).sum(axis=1)
        fp = ((y_pred == c) & (y_true != c)).sum(axis=1)
        fn = ((y_pred != c) & (y_true == c)).sum(axis=1)
        denominator = 2 * tp + fp + fn
        f1.append(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0))
    return np.mean(f1, axis=0)


def score_with_interval(y_true, y_pred, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """`score` plus a bootstrap interval for each metric (``accuracy_low``, ``accuracy_high``, ...).

    The test tweets are resampled with replacement `n_resamples` times; the interval holds the middle
    `level` of the resampled scores. With 300 test tweets a macro-F1 is typically known to about ±0.05.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred) or not len(y_true):
        raise ValueError(f"need as many predictions as labels, and at least one: got {len(y_pred)} and {len(y_true)}")
    rows = np.random.default_rng(seed).integers(0, len(y_true), size=(n_resamples, len(y_true)))
    true, pred = y_true[rows], y_pred[rows]
    resampled = {
        "accuracy": (true == pred).mean(axis=1),
        "macro_f1": _macro_f1_rows(true, pred, np.union1d(y_true, y_pred)),
    }
    tail = (1 - level) / 2 * 100
    result = score(y_true, y_pred)
    for name, values in resampled.items():
        result[f"{name}_low"], result[f"{name}_high"] = (float(v) for v in np.percentile(values, [tail, 100 - tail]))
    return result


METRICS = ("accuracy", "macro_f1")


def _resampled_metric(metric: str, true: np.ndarray, pred: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """`metric` of every row of (resamples x examples) label arrays."""
    if metric == "accuracy":
        return (true == pred).mean(axis=1)
    return _macro_f1_rows(true, pred, classes)


def _checked(*arrays) -> list[np.ndarray]:
    """The arrays as numpy arrays, after checking that they are non-empty and of one length."""
    arrays = [np.asarray(a) for a in arrays]
    if not len(arrays[0]) or len({len(a) for a in arrays}) != 1:
        raise ValueError(
            f"need one prediction of each system per tweet, and at least one tweet: got lengths "
            f"{', '.join(str(len(a)) for a in arrays)}"
        )
    return arrays


def _difference(resampled: np.ndarray, difference: float, metric: str, level: float) -> dict:
    """The paired-difference dict from the resampled differences and the full-sample one."""
    tail = (1 - level) / 2 * 100
    low, high = (float(v) for v in np.percentile(resampled, [tail, 100 - tail]))
    return {"difference": difference, "low": low, "high": high, "includes_zero": low <= 0 <= high, "metric": metric}


def _runs(n_tweets: int, *arrays) -> list[np.ndarray]:
    """Each array of predictions as (runs x tweets), a 1-D one as one run, after checking that every run has one
    prediction for each of the `n_tweets` tweets and that each array has at least one run."""
    runs = [np.atleast_2d(np.asarray(a)) for a in arrays]
    if not n_tweets or any(r.ndim != 2 or not len(r) for r in runs) or {r.shape[1] for r in runs} != {n_tweets}:
        raise ValueError(
            f"need runs of one prediction per tweet, the same {n_tweets} tweets in each: got shapes "
            f"{', '.join(str(np.shape(a)) for a in arrays)}"
        )
    return runs


def clustered_difference(
    y_true, pred_a, pred_b, *, metric: str = "macro_f1", n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict:
    """mean metric(a) - mean metric(b) over several runs on the same tweets, with a cluster bootstrap interval.

    `pred_a` and `pred_b` are (runs x tweets) arrays of predicted label ids: each row one run (a prompt with
    other examples, say) on the tweets `y_true`, in the same order; they may have different numbers of rows, and
    a 1-D array is one run. The difference is the mean of `metric` over a's runs minus that over b's. Each
    resample draws TWEETS with replacement and keeps all of a tweet's runs together (a cluster bootstrap), so
    the interval is that of these tweets: the runs of one tweet are not independent (a tweet that is hard under
    one prompt is hard under the others), and resampling (run, tweet) rows as if they were would make the
    interval too narrow. The interval does not cover drawing other runs (other examples). Returns
    ``difference``, ``low``, ``high``, ``includes_zero`` and ``metric``, as `paired_difference`.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    y_true = np.asarray(y_true)
    a, b = _runs(len(y_true), pred_a, pred_b)
    rows = np.random.default_rng(seed).integers(0, len(y_true), size=(n_resamples, len(y_true)))
    true = y_true[rows]

    def resampled(runs):
        return np.mean([_resampled_metric(metric, true, run[rows], np.union1d(y_true, run)) for run in runs], axis=0)

    difference = float(np.mean([score(y_true, r)[metric] for r in a]) - np.mean([score(y_true, r)[metric] for r in b]))
    return _difference(resampled(a) - resampled(b), difference, metric, level)


def clustered_share_difference(
    pred_a, pred_b, *, label: int = 1, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict:
    """share(a) - share(b) of answers `label` over several runs on the same tweets, with a cluster bootstrap
    interval (as `clustered_difference`: `pred_a` and `pred_b` are (runs x tweets), each resample draws tweets
    and keeps all of a tweet's runs together). E.g. the pull of the last example: a's rows are the tweets'
    answers with the positive example last, one row per pair of examples; b's the same with the negative last.
    ``metric`` is ``"share predicted label <label>"``.
    """
    pred_a = np.atleast_2d(np.asarray(pred_a))
    a, b = (run == label for run in _runs(pred_a.shape[-1], pred_a, pred_b))
    rows = np.random.default_rng(seed).integers(0, a.shape[1], size=(n_resamples, a.shape[1]))
    resampled = a[:, rows].mean(axis=2).mean(axis=0) - b[:, rows].mean(axis=2).mean(axis=0)
    return _difference(resampled, float(a.mean() - b.mean()), f"share predicted label {label}", level)


def paired_difference(
    y_true, pred_a, pred_b, *, metric: str = "macro_f1", n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict:
    """metric(a) - metric(b) on the same tweets, with a paired bootstrap interval.

    Each resample draws tweet indices with replacement and scores both systems on the SAME indices, so the
    interval is that of the difference itself: narrower than two separate intervals whenever the systems
    get the same tweets right. Returns ``difference``, ``low``, ``high``, ``includes_zero`` and ``metric``.
    (`clustered_difference` with one run each; it takes several runs of each system on the same tweets.)

    Why not ``scipy.stats.bootstrap(paired=True, method="BCa")``: on the six cpu-profile comparisons of notebooks
    02, 04 and 05 its interval was within 0.006 of this percentile one, with the same verdict on 0 each time, but it
    is NaN when every resampled difference is the same (two systems that predict alike, as the tiny profile's
    random models often do), where this one is the exact [0, 0].
    """
    y_true, pred_a, pred_b = _checked(y_true, pred_a, pred_b)
    return clustered_difference(
        y_true, [pred_a], [pred_b], metric=metric, n_resamples=n_resamples, level=level, seed=seed
    )


def paired_share_difference(
    pred_a, pred_b, *, label: int = 1, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict:
    """share(a) - share(b) of tweets predicted `label`, the same tweets under two prompts, with a paired
    bootstrap interval (as `paired_difference`; ``metric`` is ``"share predicted label <label>"``).

    This measures a pull on the answers rather than their accuracy: e.g. how many more tweets are called
    positive when the last example of the prompt is positive than when it is negative. (`clustered_share_difference`
    with one run each.)
    """
    pred_a, pred_b = _checked(pred_a, pred_b)
    return clustered_share_difference([pred_a], [pred_b], label=label, n_resamples=n_resamples, level=level, seed=seed)


def winner_stability(
    y_true, predictions: dict, *, metric: str = "macro_f1", n_resamples: int = 1000, seed: int = 0
) -> dict:
    """How often a bootstrap resample of the same tweets picks the same best variant as the full sample.

    `predictions` maps each variant's name to its predictions on the tweets `y_true`. Each resample scores
    every variant on the SAME resampled tweets and takes the best (the first on a tie, as ``idxmax``).
    Returns ``winner`` (the best on all tweets), ``same_winner`` (the share of resamples that agree) and
    ``wins`` (each variant's share of resamples won): a ``same_winner`` far below 1 says the choice is noise.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if not predictions:
        raise ValueError("winner_stability needs at least one variant's predictions")
    names = list(predictions)
    y_true, *preds = _checked(y_true, *predictions.values())
    rows = np.random.default_rng(seed).integers(0, len(y_true), size=(n_resamples, len(y_true)))
    true = y_true[rows]
    resampled = np.stack([_resampled_metric(metric, true, p[rows], np.union1d(y_true, p)) for p in preds])
    winner = names[int(np.argmax([score(y_true, p)[metric] for p in preds]))]
    wins = np.bincount(resampled.argmax(axis=0), minlength=len(names)) / n_resamples
    shares = {name: float(share) for name, share in zip(names, wins)}
    return {"winner": winner, "same_winner": shares[winner], "wins": shares, "metric": metric}


def format_difference(d: dict) -> str:
    """``+0.112 [+0.061, +0.160]``: a paired difference with its interval, and `` — includes 0`` when it does."""
    text = f"{_signed(d['difference'])} [{_signed(d['low'])}, {_signed(d['high'])}]"
    return text + (" — includes 0" if d["includes_zero"] else "")


def _signed(value: float) -> str:
    """``+0.112``, ``-0.040``; a value that rounds to zero is ``0.000``, never ``-0.000``."""
    text = f"{value:+.3f}"
    return "0.000" if text in ("+0.000", "-0.000") else text


def verdict(d: dict, a: str, b: str) -> str:
    """One plain sentence on a paired difference of `a` minus `b`: which is higher, or that the interval
    includes 0 and these tweets cannot tell them apart."""
    said = f"{a} − {b}: {d['metric']} {format_difference(d)}"
    if d["includes_zero"]:
        return f"{said}, so these tweets cannot tell them apart"
    return f"{said}: {a} is {'higher' if d['difference'] > 0 else 'lower'}, beyond the noise of these tweets"


def format_interval(metrics: dict, name: str = "macro_f1") -> str:
    """``0.782 [0.731, 0.829]``: a metric with its bootstrap interval, as notebooks print it."""
    return f"{metrics[name]:.3f} [{metrics[f'{name}_low']:.3f}, {metrics[f'{name}_high']:.3f}]"


def results_path(profile: str | None = None) -> Path:
    """The results table of a profile, in `gptnb.paths.results_dir()`."""
    return results_dir() / f"{get_profile(profile).name}.csv"


def load_results(profile: str | None = None) -> pd.DataFrame:
    """Every row recorded so far under the profile (an empty table if none)."""
    path = results_path(profile)
    return pd.read_csv(path, dtype={"notebook": str}) if path.exists() else pd.DataFrame(columns=KEY)  # "02" stays "02"


def predictions_path(profile: str | None = None) -> Path:
    """Where the per-tweet predictions of the results rows are kept, beside the table (one JSON file)."""
    return results_dir() / f"{get_profile(profile).name}.predictions.json"


def _load_predictions(profile: str | None) -> dict:
    path = predictions_path(profile)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def record(
    notebook: str,
    method: str,
    model: str,
    metrics: dict,
    *,
    profile: str | None = None,
    predictions=None,
    **details,
) -> pd.DataFrame:
    """Add (or replace) the row for `notebook`/`method` and return the whole table.

    `metrics` holds at least accuracy and macro_f1; `details` adds columns such as
    n_test, data, trainable_params, train_seconds or peak_rss_gib. `predictions`, the
    predicted label id of every test tweet in order, is kept beside the row (see
    `recorded_predictions`), so that another notebook can compare with it tweet by tweet.
    """
    if predictions is not None:
        predictions = [int(label) for label in predictions]
    row = {
        "notebook": notebook,
        "method": method,
        "model": model,
        **metrics,
        **details,
        "recorded": time.strftime("%Y-%m-%d %H:%M"),
    }
    table = load_results(profile)
    if len(table):
        table = table[~((table["notebook"] == notebook) & (table["method"] == method))]
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True) if len(table) else pd.DataFrame([row])
    path = results_path(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        table.to_csv(tmp, index=False)
    stored = _load_predictions(profile)
    key = f"{notebook}/{method}"
    if predictions is not None or key in stored:  # a row recorded without predictions drops its stale ones
        stored.pop(key, None)
        if predictions is not None:
            stored[key] = {"recorded": row["recorded"], "predictions": predictions}
        with replacing(predictions_path(profile)) as tmp:
            tmp.write_text(json.dumps(stored), encoding="utf-8")
    return table


def recorded_predictions(notebook: str, method: str, *, profile: str | None = None, **setup) -> list[int] | None:
    """The per-tweet predictions recorded with `notebook`'s `method` row, if that row exists with the
    `setup` columns given (as `recorded_rows` matches them) and was recorded with predictions; else None."""
    rows = recorded_rows(notebook, profile=profile, method=method, **setup)
    entry = _load_predictions(profile).get(f"{notebook}/{method}")
    if len(rows) != 1 or entry is None or entry["recorded"] != str(rows["recorded"].iloc[0]):
        return None
    if "n_test" in rows and pd.notna(rows["n_test"].iloc[0]) and len(entry["predictions"]) != rows["n_test"].iloc[0]:
        return None
    return entry["predictions"]


def recorded_rows(notebook: str, *, profile: str | None = None, **columns) -> pd.DataFrame:
    """The rows `notebook` recorded whose `columns` hold the given values, e.g. notebook 02's rows for
    the same model, data and test size: ``recorded_rows("02", model=name, data=source, n_test=300)``."""
    table = load_results(profile)
    keep = table["notebook"] == notebook
    for name, value in columns.items():
        if name not in table:
            return table.iloc[:0]
        column = table[name]
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # read back as float when a row lacks it
            keep &= pd.to_numeric(column, errors="coerce") == value
        else:
            keep &= column.astype(str) == str(value)
    return table[keep]
