"""``/v1/responses`` on the local server, driven by the real openai SDK over loopback (no mocks): whole and
streamed answers parsed into the SDK's typed objects, the same request answered as Chat Completions answers it,
stored responses (retrieved, continued with previous_response_id, kept across a restart), ``ft:`` models,
OpenAI-shaped errors, and the guard (keys, Origin) in front of it as in front of chat.
"""

import json

import httpx
import openai
import pytest
from conftest import KEY, MODEL, wait
from openai.types.responses import Response

from gptnb.serve import local_server

GREEDY = {"temperature": 0}


def chat(client, messages, max_tokens=6):
    """The Chat Completions answer to `messages`, greedy: (its text, its usage)."""
    answer = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, **GREEDY)
    return answer.choices[0].message.content, answer.usage


def test_a_response_parses_and_says_what_chat_says(client):
    response = client.responses.create(model=MODEL, input="Tweet: I love it\nSentiment:", max_output_tokens=6, **GREEDY)
    assert isinstance(response, Response) and response.id.startswith("resp_") and response.object == "response"
    text, usage = chat(client, [{"role": "user", "content": "Tweet: I love it\nSentiment:"}])
    assert response.output_text == text and response.output[0].content[0].type == "output_text"
    assert response.usage.input_tokens == usage.prompt_tokens
    assert response.usage.output_tokens == usage.completion_tokens
    assert response.usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert response.model == MODEL and response.store is True


def test_instructions_are_the_system_message_and_messages_are_accepted(client):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    response = client.responses.create(
        model=MODEL, instructions="Be brief.", input=messages, max_output_tokens=6, **GREEDY
    )
    text, usage = chat(client, [{"role": "system", "content": "Be brief."}, *messages])
    assert response.output_text == text and response.usage.input_tokens == usage.prompt_tokens
    assert response.instructions == "Be brief."
    parts = [{"role": "user", "content": [{"type": "input_text", "text": "Bye"}]}]
    assert (
        client.responses.create(model=MODEL, input=parts, max_output_tokens=6, **GREEDY).output_text
        == chat(client, [{"role": "user", "content": "Bye"}])[0]
    )


def test_cut_short_by_max_output_tokens_is_incomplete(client):
    response = client.responses.create(model=MODEL, input="Count: one two", max_output_tokens=1, **GREEDY)
    assert response.usage.output_tokens == 1
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"


def test_the_stream_is_openais_event_sequence_and_matches_the_whole_response(client):
    whole = client.responses.create(model=MODEL, input="Say something", max_output_tokens=8, **GREEDY)
    events = list(
        client.responses.create(model=MODEL, input="Say something", max_output_tokens=8, stream=True, **GREEDY)
    )
    kinds = [event.type for event in events]
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(deltas),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert deltas and "".join(event.delta for event in deltas) == whole.output_text
    assert events[-4].text == whole.output_text and events[-1].response.output_text == whole.output_text
    assert events[-1].response.usage.output_tokens == whole.usage.output_tokens
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    assert len({event.item_id for event in deltas}) == 1 and deltas[0].item_id == events[-2].item.id


def test_the_sdks_stream_helper_gets_the_final_response(client):
    with client.responses.stream(model=MODEL, input="Say something", max_output_tokens=4, **GREEDY) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == client.responses.retrieve(final.id).output_text


def test_stored_responses_are_retrieved_continued_and_deleted(client):
    first = client.responses.create(model=MODEL, input="My name is Ada.", max_output_tokens=5, **GREEDY)
    assert client.responses.retrieve(first.id).output_text == first.output_text
    second = client.responses.create(
        model=MODEL, input="What is my name?", previous_response_id=first.id, max_output_tokens=5, **GREEDY
    )
    assert second.previous_response_id == first.id
    conversation = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "What is my name?"},
    ]
    text, usage = chat(client, conversation, max_tokens=5)
    assert second.output_text == text and second.usage.input_tokens == usage.prompt_tokens
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_instructions_are_not_carried_over(client):
    first = client.responses.create(model=MODEL, input="Hi", instructions="Be brief.", max_output_tokens=3, **GREEDY)
    second = client.responses.create(
        model=MODEL, input="Bye", previous_response_id=first.id, max_output_tokens=3, **GREEDY
    )
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": first.output_text}]
    text, usage = chat(client, [*conversation, {"role": "user", "content": "Bye"}], max_tokens=3)
    assert second.usage.input_tokens == usage.prompt_tokens and second.output_text == text


def test_unstored_and_unknown_responses_are_404_in_openais_shape(client):
    unstored = client.responses.create(model=MODEL, input="Hi", store=False, max_output_tokens=2)
    for response_id in (unstored.id, "resp_" + "0" * 48, "resp_x"):
        with pytest.raises(openai.NotFoundError) as error:
            client.responses.retrieve(response_id)
        assert error.value.body["param"] == "response_id"
    with pytest.raises(openai.NotFoundError) as error:
        client.responses.create(model=MODEL, input="Hi", previous_response_id=unstored.id)
    assert error.value.body["param"] == "previous_response_id"


@pytest.mark.parametrize(
    "arguments, param",
    [
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"max_output_tokens": 10**9}, "input"),
        ({"input": []}, "input"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input"),
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"extra_body": {"seed": 1}}, "seed"),
    ],
)
def test_bad_values_are_400_naming_the_parameter(client, arguments, param):
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(**{"model": MODEL, "input": "Hi", **arguments})
    assert error.value.body["param"].startswith(param) and error.value.body["type"] == "invalid_request_error"


def test_an_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as error:
        client.responses.create(model="gpt-5", input="Hi")
    assert error.value.body["code"] == "model_not_found" and error.value.body["param"] == "model"


def test_keys_and_web_pages_are_refused_as_for_chat(server):
    body = {"model": MODEL, "input": "Hi", "max_output_tokens": 2}
    url = f"{server.base_url}/responses"
    assert httpx.post(url, json=body).status_code == 401
    page = {"Authorization": f"Bearer {KEY}", "Origin": "http://attacker.example"}
    assert httpx.post(url, json=body, headers=page).status_code == 403
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_usage_is_counted_under_the_key(server, client):
    def output_tokens() -> int:
        page = httpx.get(f"{server.base_url}/usage", headers={"Authorization": f"Bearer {KEY}"}).json()
        return sum(result["output_tokens"] for bucket in page["data"] for result in bucket["results"])

    before = output_tokens()
    response = client.responses.create(model=MODEL, input="Hi", max_output_tokens=2)
    assert output_tokens() == before + response.usage.output_tokens


def test_chat_takes_max_completion_tokens_as_max_tokens(client):
    messages = [{"role": "user", "content": "Hi"}]
    new = client.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=3, **GREEDY)
    old = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=3, **GREEDY)
    assert new.choices[0].message.content == old.choices[0].message.content
    assert new.usage.completion_tokens == old.usage.completion_tokens <= 3


def test_a_fine_tuned_model_answers_and_responses_survive_a_restart(server, client, data_dir, monkeypatch):
    lines = [json.dumps({"prompt": f"Tweet: example {i}\nSentiment:", "completion": " positive"}) for i in range(6)]
    training = client.files.create(file=("train.jsonl", "\n".join(lines).encode()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=training.id, suffix="resp", hyperparameters={"n_epochs": 1}
    )
    job = wait(client, job.id, timeout=180)
    assert job.status == "succeeded", job.error
    tuned = client.responses.create(model=job.fine_tuned_model, input="Tweet: example 1", max_output_tokens=3, **GREEDY)
    assert tuned.model == job.fine_tuned_model and tuned.usage.output_tokens >= 1
    monkeypatch.setenv("GPTNB_PROFILE", "tiny")
    with local_server(MODEL, data_dir=data_dir, api_key=KEY) as again:
        restarted = again.client(max_retries=0, timeout=60)
        assert restarted.responses.retrieve(tuned.id).output_text == tuned.output_text
        later = restarted.responses.create(
            model=job.fine_tuned_model, input="And again?", previous_response_id=tuned.id, max_output_tokens=2
        )
        assert later.previous_response_id == tuned.id


def test_an_error_mid_stream_is_sent_as_each_api_streams_one(capsys):
    """Chat and completions streams end an error with ``[DONE]``; a Responses stream sends an ``error`` event
    numbered after the last event sent."""
    from gptnb.serve.wire import event_stream, sse

    def events(count):
        yield from ({"type": "response.created", "sequence_number": i} for i in range(count))
        raise ValueError("boom")

    error = {"message": "ValueError: boom", "type": "server_error", "param": None, "code": None}
    assert "".join(sse(events(0)).lines) == f"data: {json.dumps({'error': error})}\n\ndata: [DONE]\n\n"
    frames = "".join(event_stream(events(2)).lines).split("\n\n")
    assert frames[1] == 'event: response.created\ndata: {"type": "response.created", "sequence_number": 1}'
    failed = {**error, "type": "error", "sequence_number": 2}
    assert frames[2:] == [f"event: error\ndata: {json.dumps(failed)}", ""]
    assert "ValueError: boom" in capsys.readouterr().err
