"""The local server, driven by the real openai SDK over loopback: every endpoint, no mocks.

The session's server (conftest: tiny-gpt2, an API key) serves the module; restart and crash tests start more.
"""

import io
import json
import math
import os
import signal
import subprocess
import sys

import httpx
import openai
import pytest
import torch
from conftest import KEY, MODEL, PAIRS, free_port, serve, upload, wait

from gptnb.serve import local_server

CHATS = [
    json.dumps(
        {"messages": [{"role": "user", "content": f"Tweet: sample {i}"}, {"role": "assistant", "content": "positive"}]}
    )
    for i in range(3)
]


# --- models and completions ---------------------------------------------------------------------


def test_models_list_and_retrieve(client):
    assert MODEL in [model.id for model in client.models.list()]
    assert client.models.retrieve(MODEL).owned_by == "gptnb"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("davinci")


def test_greedy_completion_is_deterministic_and_counts_tokens(client, tiny_gpt2):
    _, tokenizer = tiny_gpt2
    prompt = "The tweet was"
    first = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0)
    again = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0)
    assert first.choices[0].text == again.choices[0].text and first.choices[0].text
    assert first.choices[0].finish_reason == "length"
    assert first.usage.prompt_tokens == len(tokenizer(prompt).input_ids)
    assert first.usage.completion_tokens == 6 and first.usage.total_tokens == first.usage.prompt_tokens + 6


def test_logprobs_are_the_models_own_top_k(client, tiny_gpt2):
    model, tokenizer = tiny_gpt2
    prompt = "Sentiment:"
    result = client.completions.create(model=MODEL, prompt=prompt, max_tokens=1, temperature=0, logprobs=3)
    logprobs = result.choices[0].logprobs
    assert len(logprobs.top_logprobs[0]) == 3
    with torch.no_grad():
        expected = torch.log_softmax(model(torch.tensor([tokenizer(prompt).input_ids])).logits[0, -1], -1)
    best = expected.topk(3)
    assert logprobs.tokens[0] == tokenizer.decode([int(best.indices[0])]), "greedy picks the most likely token"
    assert math.isclose(logprobs.token_logprobs[0], float(best.values[0]), abs_tol=1e-4)
    assert sorted(logprobs.top_logprobs[0].values(), reverse=True) == pytest.approx(best.values.tolist(), abs=1e-4)
    assert logprobs.text_offset[0] == len(prompt)


def test_echo_with_zero_tokens_scores_the_prompt(client, tiny_gpt2):
    model, tokenizer = tiny_gpt2
    prompt = "I love this phone"
    result = client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True, logprobs=0)
    choice = result.choices[0]
    assert choice.text == prompt
    ids = tokenizer(prompt).input_ids
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    expected = [None] + [float(logprobs[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    assert choice.logprobs.token_logprobs[0] is None
    assert choice.logprobs.token_logprobs[1:] == pytest.approx(expected[1:], abs=1e-4)
    assert choice.logprobs.text_offset[0] == 0


def test_stop_string_ends_the_text_before_it(client):
    full = (
        client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=12, temperature=0).choices[0].text
    )
    stop = full[6:9]
    cut = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_several_prompts_n_choices_and_token_id_prompts(client, tiny_gpt2):
    _, tokenizer = tiny_gpt2
    result = client.completions.create(model=MODEL, prompt=["good", "bad"], n=2, max_tokens=3, temperature=0)
    assert [choice.index for choice in result.choices] == [0, 1, 2, 3]
    assert result.choices[0].text == result.choices[1].text, "greedy choices agree"
    by_ids = client.completions.create(model=MODEL, prompt=tokenizer("good").input_ids, max_tokens=3, temperature=0)
    assert by_ids.choices[0].text == result.choices[0].text


def test_seeded_sampling_is_reproducible(client):
    def sample(seed):
        return (
            client.completions.create(model=MODEL, prompt="Hello", max_tokens=8, temperature=1.0, top_p=0.9, seed=seed)
            .choices[0]
            .text
        )

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_streamed_completion_matches_the_whole_one(client):
    whole = client.completions.create(model=MODEL, prompt="Today", max_tokens=8, temperature=0, stop=["zzz"])
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt="Today",
            max_tokens=8,
            temperature=0,
            stop=["zzz"],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 8


def test_chat_completion_plain_template_stream_and_logprobs(client):
    messages = [
        {"role": "developer", "content": "Answer in one word."},
        {"role": "user", "content": [{"type": "text", "text": "How was the movie?"}]},
    ]
    whole = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2
    )
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == choice.message.content.lstrip()
    assert len(choice.logprobs.content) == whole.usage.completion_tokens
    assert all(len(entry.top_logprobs) == 2 for entry in choice.logprobs.content)
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5, temperature=0, stream=True)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason


# --- the error contract -------------------------------------------------------------------------


def test_errors_have_openais_shape_and_status(server, client):
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="text-davinci-003", prompt="x")
    assert missing.value.body["code"] == "model_not_found" and missing.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: best_effort"):
        client.completions.create(model=MODEL, prompt="x", extra_body={"best_effort": True})
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model=MODEL, prompt="x " * 600, max_tokens=5)
    assert too_long.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=3)
    for key in (None, "wrong-key"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        answer = httpx.get(f"{server.base_url}/models", headers=headers)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0).models.list()
    big = httpx.post(
        f"{server.base_url}/completions",
        content=b"x" * (5 * 2**20),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"


HOSTILE = [
    b"{not json",
    b"[]",
    b'"text"',
    b"null",
    b'{"model": 5, "prompt": "x"}',
    b'{"model": "tiny-gpt2", "prompt": [-1]}',
    b'{"model": "tiny-gpt2", "prompt": [[]]}',
    b'{"model": "tiny-gpt2", "prompt": [1, "a"]}',
    b'{"model": "tiny-gpt2", "prompt": [99999999999]}',
    b'{"model": "tiny-gpt2", "prompt": "x", "max_tokens": 1e30}',
    b'{"model": "tiny-gpt2", "prompt": "x", "n": 99999}',
    b'{"model": "tiny-gpt2", "prompt": "x", "seed": 1e400}',
    b'{"model": "tiny-gpt2", "prompt": "x", "stop": [""]}',
    b'{"model": "tiny-gpt2", "prompt": "x", "logprobs": -1}',
    b'{"model": "tiny-gpt2", "prompt": "x", "top_p": NaN}',
    b'{"model": "tiny-gpt2", "prompt": "x", "temperature": Infinity}',
    b'{"model": "tiny-gpt2", "prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"model": "tiny-gpt2", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
    b'{"model": "tiny-gpt2", "messages": [{"role": "system"}]}',
]


@pytest.mark.parametrize("path", ["/completions", "/chat/completions", "/fine_tuning/jobs"])
def test_hostile_bodies_get_4xx_and_the_server_keeps_serving(server, client, path):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for body in HOSTILE:
        answer = httpx.post(server.base_url + path, content=body, headers=headers, timeout=60)
        assert 400 <= answer.status_code < 500, (body[:80], answer.status_code, answer.text[:200])
        assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    for path in ("/files/../../etc/passwd", "/files/file-nope/content", "/fine_tuning/jobs/x/events?limit=-3"):
        assert 400 <= httpx.get(server.base_url + path, headers=headers).status_code < 500
    assert client.completions.create(model=MODEL, prompt="still here", max_tokens=1).choices


# --- files --------------------------------------------------------------------------------------


def test_files_upload_list_get_content_delete(client):
    uploaded = upload(client, PAIRS, "pairs.jsonl")
    assert uploaded.purpose == "fine-tune" and uploaded.bytes == len("\n".join(PAIRS).encode())
    assert uploaded.id in [f.id for f in client.files.list(purpose="fine-tune")]
    assert client.files.retrieve(uploaded.id).filename == "pairs.jsonl"
    assert client.files.content(uploaded.id).text == "\n".join(PAIRS)
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_invalid_uploads_are_refused_with_line_numbers(client):
    with pytest.raises(openai.BadRequestError, match="invalid_json on lines 2 .*unrecognized_role on lines 3 "):
        upload(client, [PAIRS[0], "{oops", '{"messages": [{"role": "bot", "content": "x"}]}'])
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("x.jsonl", io.BytesIO(PAIRS[0].encode())), purpose="assistants")


# --- fine-tuning --------------------------------------------------------------------------------


def test_fine_tuning_job_lifecycle(client):
    train, val = upload(client, PAIRS), upload(client, CHATS, "val.jsonl")
    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=train.id,
        validation_file=val.id,
        suffix="unit",
        seed=1,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 20, "batch_size": 6, "learning_rate_multiplier": 2}},
        },
    )
    assert job.status == "queued" and job.hyperparameters.n_epochs == 20
    assert job.id in [j.id for j in client.fine_tuning.jobs.list()]
    job = wait(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:{MODEL}:unit:{job.id.removeprefix('ftjob-')[:8]}"
    assert job.trained_tokens > 0 and job.finished_at >= job.created_at

    events = list(reversed(client.fine_tuning.jobs.list_events(job.id, limit=1000).data))
    messages = [event.message for event in events]
    order = [
        "Validating training file",
        "moving job to queued state",
        "Fine-tuning job started",
        "Step 1/",
        "New fine-tuned model created",
        "The job has successfully completed",
    ]
    positions = [next(i for i, m in enumerate(messages) if key in m) for key in order]
    assert positions == sorted(positions), messages
    losses = [e.data["train_loss"] for e in events if e.type == "metrics" and "train_loss" in e.data]
    assert len(losses) == 20 and losses[-1] < losses[0], "the loss falls"
    assert any("full_valid_loss" in (e.data or {}) for e in events)

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and checkpoints[0].fine_tuned_model_checkpoint.startswith(job.fine_tuned_model + ":ckpt-step-")
    assert checkpoints[0].metrics.full_valid_loss is not None
    served = [model.id for model in client.models.list()]
    assert job.fine_tuned_model in served and checkpoints[0].fine_tuned_model_checkpoint in served

    def label_logprob(model):  # echo scores the prompt: the log-probability of " positive" after "Sentiment:"
        reply = client.completions.create(
            model=model, prompt="Tweet: something new\nSentiment: positive", max_tokens=0, echo=True, logprobs=0
        )
        return reply.choices[0].logprobs.token_logprobs[-1]

    tuned, base = label_logprob(job.fine_tuned_model), label_logprob(MODEL)
    assert tuned > base + 1.0, f"training made the label more likely ({base:.2f} -> {tuned:.2f})"
    assert label_logprob(checkpoints[0].fine_tuned_model_checkpoint) > base + 1.0, "a checkpoint is a trained model too"
    chat = client.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "Tweet: x"}], max_tokens=2, temperature=0
    )
    assert chat.choices[0].message.content
    results = client.files.content(job.result_files[0]).text.splitlines()
    assert results[0] == "step,train_loss,valid_loss" and len(results) > 8


def test_legacy_hyperparameters_and_cancel(client):
    train = upload(client, PAIRS)
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=train.id, hyperparameters={"n_epochs": 50})
    assert job.hyperparameters.n_epochs == 50
    wait(client, job.id, until=("running",))
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    # Jobs train one at a time: once the next job runs, the cancelled one has wound down.
    following = client.fine_tuning.jobs.create(model=MODEL, training_file=train.id, hyperparameters={"n_epochs": 50})
    wait(client, following.id, until=("running",))
    client.fine_tuning.jobs.cancel(following.id)
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "cancelled" and job.fine_tuned_model is None
    assert any(e.message == "Job cancelled" for e in client.fine_tuning.jobs.list_events(job.id))
    with pytest.raises(openai.BadRequestError, match="already cancelled"):
        client.fine_tuning.jobs.cancel(job.id)


def test_job_requests_that_cannot_run(client):
    train = upload(client, PAIRS)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.create(model="davinci-002", training_file=train.id)
    with pytest.raises(openai.BadRequestError, match="training_file"):
        client.fine_tuning.jobs.create(model=MODEL, training_file="file-missing")
    with pytest.raises(openai.BadRequestError, match="n_epochs"):
        client.fine_tuning.jobs.create(model=MODEL, training_file=train.id, hyperparameters={"n_epochs": 0})
    with pytest.raises(openai.BadRequestError, match="not both"):
        client.fine_tuning.jobs.create(
            model=MODEL,
            training_file=train.id,
            hyperparameters={"n_epochs": 1},
            method={"type": "supervised", "supervised": {"hyperparameters": {}}},
        )
    with pytest.raises(openai.BadRequestError, match="supervised"):
        client.fine_tuning.jobs.create(model=MODEL, training_file=train.id, method={"type": "dpo"})
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")


def test_a_restarted_server_keeps_files_jobs_and_models(server, client, data_dir):
    train = upload(client, PAIRS)
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=train.id, hyperparameters={"n_epochs": 1})
    tuned = wait(client, job.id).fine_tuned_model
    assert tuned, "the job succeeded"
    jobs = {job.id: job for job in client.fine_tuning.jobs.list()}
    before = client.completions.create(model=tuned, prompt="Tweet: hi\nSentiment:", max_tokens=3, temperature=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GPTNB_PROFILE", "tiny")
        with local_server(MODEL, data_dir=data_dir) as again:
            other = again.client(max_retries=0)
            assert {job.id: job.status for job in other.fine_tuning.jobs.list()} == {
                i: j.status for i, j in jobs.items()
            }
            assert {f.id for f in other.files.list()} == {f.id for f in client.files.list()}
            after = other.completions.create(model=tuned, prompt="Tweet: hi\nSentiment:", max_tokens=3, temperature=0)
    assert after.choices[0].text == before.choices[0].text


# --- the command line, and a crash --------------------------------------------------------------


def test_gptnb_serve_survives_a_crash_mid_job(tmp_path):
    port, log_path = free_port(), tmp_path / "serve.log"
    with open(log_path, "w") as log:
        process, client = serve(tmp_path / "data", port, log)
        try:
            assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
            train = upload(client, PAIRS)
            job = client.fine_tuning.jobs.create(model=MODEL, training_file=train.id, hyperparameters={"n_epochs": 50})
            wait(client, job.id, until=("running",))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        process, client = serve(tmp_path / "data", port, log)
        try:
            crashed = client.fine_tuning.jobs.retrieve(job.id)
            assert crashed.status == "failed" and crashed.error.code == "server_stopped"
            assert "restart" in crashed.error.message
            assert client.files.retrieve(train.id).bytes == train.bytes
        finally:
            process.terminate()
            process.wait(timeout=30)
    output = log_path.read_text()
    assert "marked failed" in output and KEY not in output, "the key is never printed"


def test_local_server_stops_cleanly_when_python_exits(tmp_path):
    code = (
        f"import gptnb.serve as serve; server = serve.local_server({MODEL!r}, data_dir={str(tmp_path)!r}); "
        "print(server.client().models.list().data[0].id)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "GPTNB_PROFILE": "tiny"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith(MODEL)
