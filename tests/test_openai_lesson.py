"""gptnb.openai_lesson: the switch between OpenAI and the local server, OpenAI's refusal to create a fine-tuning
job as one line, the base model's predictions, and the paired comparison."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import openai
import pytest

from gptnb import openai_lesson
from gptnb.data import load_tweets
from gptnb.profiles import get_profile


class FakeJobs:
    def __init__(self, error=None):
        self.error, self.calls = error, []

    def create(self, **arguments):
        self.calls.append(arguments)
        if self.error is not None:
            raise self.error
        return SimpleNamespace(id="ftjob-1", status="validating_files", **arguments)


def fake_tuner(url, error=None):
    """What `create_job` uses of an ``openai.OpenAI`` client: ``base_url`` and ``fine_tuning.jobs.create``."""
    return SimpleNamespace(base_url=httpx.URL(url), fine_tuning=SimpleNamespace(jobs=FakeJobs(error)))


def api_error(kind, status, message):
    request = httpx.Request("POST", "https://api.openai.com/v1/fine_tuning/jobs")
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return kind(message, response=httpx.Response(status, request=request, json=body), body=body["error"])


OPENAI = "https://api.openai.com/v1/"
REFUSED = "Fine-tuning job creation is no longer available for this organization."


def test_an_account_that_can_no_longer_create_jobs_gets_one_line_saying_why():
    tuner = fake_tuner(OPENAI, api_error(openai.PermissionDeniedError, 403, REFUSED + "\nSee the docs."))
    with pytest.raises(openai_lesson.FineTuningRefused) as caught:
        openai_lesson.create_job(tuner, model="gpt-4.1-nano-2025-04-14", training_file="file-1")
    line = str(caught.value)
    assert "\n" not in line and "403" in line and REFUSED in line and "gpt-4.1-nano-2025-04-14" in line
    for fact in ("winding down", "2026-05-07", "2026-07-02", "2027-01-06", openai_lesson.WIND_DOWN_CHECKED):
        assert fact in line
    assert "TUNE_ON_OPENAI = False" in line
    assert caught.value._render_traceback_() == [f"FineTuningRefused: {line}"]
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chained SDK traceback


def test_other_refusals_are_one_line_without_the_wind_down_story():
    tuner = fake_tuner(OPENAI, api_error(openai.BadRequestError, 400, "invalid n_epochs: must be at most 50"))
    with pytest.raises(openai_lesson.FineTuningRefused) as caught:
        openai_lesson.create_job(tuner, model="m", training_file="file-1")
    assert "400: invalid n_epochs" in str(caught.value) and "winding down" not in str(caught.value)


def test_the_local_servers_errors_and_successes_pass_through():
    error = api_error(openai.BadRequestError, 400, "n_epochs must be positive")
    with pytest.raises(openai.BadRequestError):
        openai_lesson.create_job(fake_tuner("http://127.0.0.1:8123/v1/", error), model="m", training_file="f")
    tuner = fake_tuner(OPENAI)
    job = openai_lesson.create_job(tuner, model="m", training_file="f", suffix="tweets")
    assert job.id == "ftjob-1"
    assert tuner.fine_tuning.jobs.calls == [{"model": "m", "training_file": "f", "suffix": "tweets"}]


class FakeServer:
    """What `connect` uses of a `gptnb.serve.LocalServer`."""

    def __init__(self, *ids):
        self.base_url, self.model, self.loaded = "http://127.0.0.1:9/v1/", "tiny-gpt2", "tiny-gpt2"
        self.store, self.stopped = SimpleNamespace(root="/tmp/store"), False
        self.ids = ids

    def describe(self):
        return "tiny-gpt2 (random weights)"

    def client(self):
        listed = [SimpleNamespace(id=name) for name in self.ids]
        return SimpleNamespace(base_url=self.base_url, models=SimpleNamespace(list=lambda: listed))

    def stop(self):
        self.stopped = True


def test_without_a_key_everything_goes_to_the_local_server(capsys):
    server = FakeServer("tiny-gpt2")
    api = openai_lesson.connect(tune_on_openai=True, start_server=lambda: server, environ={})
    out = capsys.readouterr().out
    assert "TUNE_ON_OPENAI = True needs an OpenAI key" in out and "the local server (no key)" in out
    assert (api.chat_model, api.completion_model, api.tune_model) == ("tiny-gpt2",) * 3
    assert api.tunes_locally and not api.use_openai and api.server is server
    api.stop()
    assert server.stopped and "/tmp/store" in capsys.readouterr().out


def test_an_unlisted_model_stops_with_the_file_to_edit():
    from gptnb.openai_models import NoModelAvailable

    with pytest.raises(NoModelAvailable, match="openai_models.csv"):
        openai_lesson.connect(start_server=lambda: FakeServer("something-else"), environ={})


def test_compare_says_whether_the_paired_interval_includes_zero(capsys):
    y = [0, 1] * 50
    right, coin = list(y), [0] * 100
    result = openai_lesson.compare(y, {"tuned": right, "base": coin, "same": list(y)}, tuned="tuned")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("tuned − base: macro_f1 +") and "tuned is higher, beyond the noise" in lines[0]
    assert "includes 0, so these tweets cannot tell them apart" in lines[1]
    assert result["differences"]["base"]["low"] > 0 and result["differences"]["same"]["includes_zero"]
    assert list(result["table"].index) == ["tuned", "base", "same"]
    with pytest.raises(KeyError, match="not among the models compared"):
        openai_lesson.compare(y, {"base": coin}, tuned="tuned")


@pytest.fixture
def tiny_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTNB_RESULTS", str(tmp_path))
    return load_tweets("sample", n_train=40, n_val=12, n_test=16, profile="tiny", verbose=False)


def test_base_predictions_are_notebook_02s_computed_once_then_read(tiny_gpt2, tiny_splits, monkeypatch, capsys):
    import gptnb.models

    api = openai_lesson.Connection(None, None, FakeServer(), False, False, "tiny-gpt2", "tiny-gpt2", "tiny-gpt2")
    profile = get_profile("tiny")
    monkeypatch.setattr(gptnb.models, "load_model", lambda name: tiny_gpt2)
    first, source = openai_lesson.base_predictions(api, tiny_splits, profile, None, None, 4)
    assert "computed here" in source and len(first) == 2
    assert all(len(p) == len(tiny_splits.test) for p in first.values())

    def no_loading(name):
        raise AssertionError("the recorded predictions need no model")

    monkeypatch.setattr(gptnb.models, "load_model", no_loading)
    again, source = openai_lesson.base_predictions(api, tiny_splits, profile, None, None, 4)
    assert again == first and "results table" in source


def test_at_openai_the_base_is_asked_few_shot_through_the_api(tiny_splits):
    api = openai_lesson.Connection(None, None, None, True, True, "c", "p", "base-model")
    asked = []

    def predict(model, make_messages, texts):
        asked.append((model, make_messages))
        return [0] * len(texts)

    got, source = openai_lesson.base_predictions(api, tiny_splits, get_profile("tiny"), predict, "few", 4)
    assert asked == [("base-model", "few")] and list(got) == ["base, 4-shot via the API"] and source == "API"
