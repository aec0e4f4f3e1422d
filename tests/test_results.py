"""The shared results table: rows recorded, replaced and found again."""

from __future__ import annotations

import pytest

from gptnb import results


@pytest.fixture(autouse=True)
def _own_table(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTNB_RESULTS", str(tmp_path))


def test_record_replaces_a_method_and_keeps_notebook_as_text():
    results.record("02", "zero-shot", "m", {"accuracy": 0.5, "macro_f1": 0.4}, profile="tiny", n_test=40)
    results.record("02", "zero-shot", "m", {"accuracy": 0.6, "macro_f1": 0.5}, profile="tiny", n_test=40)
    table = results.load_results("tiny")
    assert len(table) == 1 and table["notebook"].tolist() == ["02"] and table["accuracy"].tolist() == [0.6]


def test_recorded_rows_match_every_column_given():
    assert results.recorded_rows("02", profile="tiny", model="m").empty  # no table yet
    metrics = {"accuracy": 0.5, "macro_f1": 0.4}
    results.record("02", "zero-shot", "m", metrics, profile="tiny", n_test=40, data="sample")
    results.record("02", "few-shot", "other", metrics, profile="tiny", n_test=40, data="sample")
    results.record("04", "fine-tune", "m", metrics, profile="tiny", data="sample")  # no n_test: the column turns float
    found = results.recorded_rows("02", profile="tiny", model="m", data="sample", n_test=40)
    assert found["method"].tolist() == ["zero-shot"]
    assert results.recorded_rows("02", profile="tiny", model="m", n_test=24).empty
    assert results.recorded_rows("02", profile="tiny", shots=0).empty  # a column nobody recorded
    assert results.recorded_rows("04", profile="tiny", model="m")["method"].tolist() == ["fine-tune"]


def test_score_with_interval_brackets_the_score_and_narrows_with_more_tweets():
    import numpy as np

    from gptnb.results import format_interval, score_with_interval

    rng = np.random.default_rng(0)
    widths = []
    for n in (60, 600):
        truth = rng.integers(0, 2, n)
        predicted = np.where(rng.random(n) < 0.8, truth, 1 - truth)
        metrics = score_with_interval(truth, predicted)
        assert metrics["macro_f1_low"] < metrics["macro_f1"] < metrics["macro_f1_high"]
        assert metrics["accuracy_low"] < metrics["accuracy"] < metrics["accuracy_high"]
        widths.append(metrics["macro_f1_high"] - metrics["macro_f1_low"])
    assert widths[1] < widths[0] / 2
    assert format_interval({"macro_f1": 0.5, "macro_f1_low": 0.25, "macro_f1_high": 0.75}) == "0.500 [0.250, 0.750]"


def test_score_with_interval_refuses_mismatched_lengths():
    import pytest

    from gptnb.results import score_with_interval

    with pytest.raises(ValueError, match="as many predictions"):
        score_with_interval([0, 1], [0])


def test_results_go_to_the_current_folder_unless_gptnb_results_says_otherwise(monkeypatch, tmp_path):
    from gptnb.results import results_path

    monkeypatch.delenv("GPTNB_RESULTS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert results_path("tiny") == tmp_path / "results" / "tiny.csv"
    monkeypatch.setenv("GPTNB_RESULTS", str(tmp_path / "elsewhere"))
    assert results_path("tiny") == tmp_path / "elsewhere" / "tiny.csv"


def _two_systems(n=300, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.85, truth, 1 - truth)
    b = np.where(rng.random(n) < 0.75, truth, 1 - truth)
    return truth, a, b


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_paired_difference_agrees_with_scipy_paired_bootstrap(metric):
    import numpy as np
    from scipy.stats import bootstrap

    truth, a, b = _two_systems()
    d = results.paired_difference(truth, a, b, metric=metric, n_resamples=2000)
    assert d["difference"] == pytest.approx(results.score(truth, a)[metric] - results.score(truth, b)[metric])
    assert d["low"] < d["difference"] < d["high"] and d["metric"] == metric and not d["includes_zero"]

    def difference(t, x, y):
        return results.score(t, x)[metric] - results.score(t, y)[metric]

    reference = bootstrap(
        (truth, a, b),
        difference,
        paired=True,
        vectorized=False,
        n_resamples=2000,
        method="percentile",
        random_state=np.random.default_rng(1),
    ).confidence_interval
    assert d["low"] == pytest.approx(reference.low, abs=0.015) and d["high"] == pytest.approx(reference.high, abs=0.015)


def test_paired_difference_uses_the_same_tweets_for_both_systems():
    import numpy as np

    truth, a, _ = _two_systems()
    flipped = a.copy()
    flipped[:6] = 1 - flipped[:6]  # b differs from a on 6 tweets only: the paired interval is narrow
    paired = results.paired_difference(truth, a, flipped, metric="accuracy")
    apart = [results.score_with_interval(truth, p) for p in (a, flipped)]
    unpaired_width = sum(m["accuracy_high"] - m["accuracy_low"] for m in apart) / 2
    assert paired["high"] - paired["low"] < unpaired_width / 2  # resampled apart, it would be ~1.4 times wider
    same = results.paired_difference(truth, a, a)
    assert same["difference"] == same["low"] == same["high"] == 0 and same["includes_zero"]
    assert np.isfinite(paired["low"])


def test_paired_difference_refuses_bad_input():
    with pytest.raises(ValueError, match="one prediction of each system"):
        results.paired_difference([0, 1], [0, 1], [0])
    with pytest.raises(ValueError, match="unknown metric"):
        results.paired_difference([0, 1], [0, 1], [1, 0], metric="f1")


def test_format_difference_says_when_the_interval_includes_zero():
    d = {"difference": 0.112, "low": 0.061, "high": 0.16, "includes_zero": False}
    assert results.format_difference(d) == "+0.112 [+0.061, +0.160]"
    d = {"difference": 0.02, "low": -0.03, "high": 0.07, "includes_zero": True}
    assert results.format_difference(d) == "+0.020 [-0.030, +0.070] — includes 0"


def test_predictions_are_stored_beside_their_row_and_dropped_with_it():
    metrics = {"accuracy": 0.5, "macro_f1": 0.4}
    assert results.recorded_predictions("02", "zero-shot", profile="tiny") is None  # no table yet
    results.record("02", "zero-shot", "m", metrics, profile="tiny", predictions=[0, 1, 1], n_test=3, data="d")
    assert results.recorded_predictions("02", "zero-shot", profile="tiny", model="m", n_test=3) == [0, 1, 1]
    assert results.recorded_predictions("02", "zero-shot", profile="tiny", model="other") is None
    assert results.recorded_predictions("02", "few-shot", profile="tiny") is None
    assert "predictions" not in results.load_results("tiny")  # the table keeps one line per row
    results.record("02", "zero-shot", "m", metrics, profile="tiny", n_test=3, data="d")  # re-recorded without them
    assert results.recorded_predictions("02", "zero-shot", profile="tiny", model="m") is None
    results.record("02", "zero-shot", "m", metrics, profile="tiny", predictions=[0, 1], n_test=3)  # not n_test long
    assert results.recorded_predictions("02", "zero-shot", profile="tiny") is None


def test_verdict_says_which_is_higher_or_that_zero_is_inside():
    d = {"difference": -0.05, "low": -0.09, "high": -0.01, "includes_zero": False, "metric": "accuracy"}
    assert results.verdict(d, "calibrated", "plain").endswith("calibrated is lower, beyond the noise of these tweets")
    d = {**d, "high": 0.02, "includes_zero": True}
    assert results.verdict(d, "calibrated", "plain").endswith("includes 0, so these tweets cannot tell them apart")


def test_paired_share_difference_measures_a_pull_on_the_answers():
    import numpy as np

    rng = np.random.default_rng(0)
    b = rng.integers(0, 2, 200)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:30]] = 1  # 30 of 200 tweets turn positive under prompt a: +0.15
    d = results.paired_share_difference(a, b)
    assert d["difference"] == pytest.approx(0.15) and d["metric"] == "share predicted label 1"
    assert 0 < d["low"] < 0.15 < d["high"] < 0.25 and not d["includes_zero"]
    assert results.paired_share_difference(a, b, label=0)["difference"] == pytest.approx(-0.15)
    same = results.paired_share_difference(b, b)
    assert same["low"] == same["high"] == 0 and same["includes_zero"]
    with pytest.raises(ValueError, match="one prediction of each system"):
        results.paired_share_difference([1, 0], [1])


def test_winner_stability_tells_a_clear_winner_from_a_noisy_one():
    truth, a, b = _two_systems()  # a is right on ~85 % of the tweets, b on ~75 %
    clear = results.winner_stability(truth, {"b": b, "a": a})
    assert clear["winner"] == "a" and clear["same_winner"] > 0.95
    assert sum(clear["wins"].values()) == pytest.approx(1.0)
    import numpy as np

    near = a.copy()  # as accurate as a, right on 3 other tweets and wrong on 3 others: which one wins is luck
    for changed in (np.flatnonzero(a == truth)[:3], np.flatnonzero(a != truth)[:3]):
        near[changed] = 1 - near[changed]
    noisy = results.winner_stability(truth, {"a": a, "near": near, "b": b}, metric="accuracy")
    assert noisy["winner"] == "a" and 0.2 < noisy["same_winner"] < 0.8  # a tie on all tweets goes to the first
    assert noisy["wins"]["near"] > 0.2 and noisy["wins"]["b"] < 0.05
    with pytest.raises(ValueError, match="unknown metric"):
        results.winner_stability(truth, {"a": a}, metric="f1")


def _width(d: dict) -> float:
    return d["high"] - d["low"]


def test_clustered_share_difference_resamples_tweets_not_runs():
    """Three runs (pairs of examples) that answer every tweet alike carry the information of one run: the cluster
    interval is that of one run, about sqrt(3) times wider than resampling the 3 x 200 (run, tweet) rows."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    runs_a, runs_b = np.stack([a] * 3), np.stack([b] * 3)
    clustered = results.clustered_share_difference(runs_a, runs_b)
    one_run = results.paired_share_difference(a, b)
    assert (clustered["low"], clustered["high"]) == pytest.approx((one_run["low"], one_run["high"]))  # same draws
    assert clustered["difference"] == pytest.approx(a.mean() - b.mean())
    naive = results.paired_share_difference(runs_a.ravel(), runs_b.ravel())  # (run, tweet) rows as if independent
    assert _width(clustered) > 1.5 * _width(naive)
    independent_a, independent_b = rng.random((3, 200)) < 0.6, rng.random((3, 200)) < 0.4  # runs that share nothing
    ratio = _width(results.clustered_share_difference(independent_a, independent_b)) / _width(
        results.paired_share_difference(independent_a.ravel(), independent_b.ravel())
    )
    assert 0.8 < ratio < 1.25  # then there is nothing to cluster: as wide as the naive interval
    uneven = results.clustered_share_difference(runs_a[:2], runs_b)  # 2 runs against 3: the share of all answers
    assert uneven["difference"] == pytest.approx(a.mean() - b.mean()) and uneven["metric"] == "share predicted label 1"


def test_clustered_difference_averages_runs_and_resamples_tweets():
    import numpy as np

    truth, a, b = _two_systems()
    one = results.clustered_difference(truth, a, b, metric="accuracy")
    assert one == results.paired_difference(truth, a, b, metric="accuracy")  # one run each: the paired interval
    flipped = a.copy()
    flipped[:10] = 1 - flipped[:10]
    d = results.clustered_difference(truth, np.stack([a, flipped]), b)  # two draws of a against one b
    expected = (results.score(truth, a)["macro_f1"] + results.score(truth, flipped)["macro_f1"]) / 2
    assert d["difference"] == pytest.approx(expected - results.score(truth, b)["macro_f1"])
    assert d["low"] < d["difference"] < d["high"] and d["metric"] == "macro_f1"
    alike = results.clustered_difference(truth, np.stack([a] * 4), np.stack([b] * 4))
    paired = results.paired_difference(truth, a, b)
    assert (alike["low"], alike["high"]) == pytest.approx((paired["low"], paired["high"]))  # 4 alike runs are one
    naive = results.paired_difference(np.tile(truth, 4), np.tile(a, 4), np.tile(b, 4))
    assert _width(alike) > 1.5 * _width(naive)
    with pytest.raises(ValueError, match="the same 3 tweets"):
        results.clustered_difference([0, 1, 1], [[0, 1, 1], [0, 1, 0]], [0, 1])
    with pytest.raises(ValueError, match="unknown metric"):
        results.clustered_difference([0, 1], [0, 1], [1, 0], metric="f1")


def test_a_difference_that_rounds_to_zero_is_not_printed_negative():
    d = {"difference": -1e-9, "low": -0.0123, "high": 0.0004, "includes_zero": True}
    assert results.format_difference(d) == "0.000 [-0.012, 0.000] — includes 0"
