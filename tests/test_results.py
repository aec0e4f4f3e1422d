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
