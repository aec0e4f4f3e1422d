"""The model choice: the first listed model the server offers, or one line naming the file to edit."""

from types import SimpleNamespace

import pytest

from gptnb.openai_models import (
    NoModelAvailable,
    choose_model,
    load_preferences,
    models_csv,
    preferred,
)

CSV = """purpose,model,provider,listed_on,note
chat,new-chat,openai,2026-01-01,first choice
chat,old-chat,openai,2025-01-01,fallback
chat,tiny-gpt2,gptnb serve,2026-11-28,local
fine-tune,new-base-2026,openai,2026-01-01,tunable
"""


class FakeClient:
    """What `choose_model` uses of an ``openai.OpenAI`` client: ``models.list()`` and ``base_url``."""

    def __init__(self, *ids):
        self.base_url = "http://fake/v1/"
        self.models = SimpleNamespace(list=lambda: [SimpleNamespace(id=name, object="model") for name in ids])


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "models.csv"
    path.write_text(CSV)
    return path


def test_first_preference_offered_wins(csv):
    choice = choose_model(FakeClient("old-chat", "new-chat", "whisper-1"), "chat", csv)
    assert (choice.model, choice.rank, choice.listed_on) == ("new-chat", 1, "2026-01-01")
    assert "new-chat (preference 1, listed on 2026-01-01: first choice)" in str(choice)


def test_retired_model_falls_through_to_the_next(csv):
    assert choose_model(FakeClient("old-chat", "ft:old-chat:x"), "chat", csv).model == "old-chat"


def test_local_server_list_is_matched_too(csv):
    choice = choose_model(FakeClient("tiny-gpt2", "ft:tiny-gpt2:tweets:abc"), "chat", csv)
    assert (choice.model, choice.rank) == ("tiny-gpt2", 3)


def test_nothing_offered_names_the_file_and_what_is_offered(csv):
    with pytest.raises(NoModelAvailable) as raised:
        choose_model(FakeClient("gpt-9", "old-chat"), "fine-tune", csv)
    message = str(raised.value)
    assert "\n" not in message and str(csv) in message and "gpt-9" in message and "'fine-tune'" in message
    assert raised.value._render_traceback_() == [f"NoModelAvailable: {message}"]


def test_bad_purpose_and_bad_file(csv, tmp_path):
    with pytest.raises(ValueError, match="use one of chat, completion, fine-tune"):
        choose_model(FakeClient("new-chat"), "embeddings", csv)
    broken = tmp_path / "broken.csv"
    broken.write_text("model,note\nx,y\n")
    with pytest.raises(NoModelAvailable, match="lacks the column"):
        load_preferences(broken)
    with pytest.raises(NoModelAvailable, match="missing"):
        load_preferences(tmp_path / "absent.csv")


def test_shipped_list_covers_every_purpose_and_every_profile_model():
    from gptnb.profiles import PROFILES

    table = load_preferences()
    assert models_csv().name == "openai_models.csv"
    for purpose in ("chat", "completion", "fine-tune"):
        assert preferred(purpose, "openai", table), purpose
        for profile in PROFILES.values():
            assert profile.prompting_model in preferred(purpose, "gptnb serve", table), (purpose, profile.name)
    assert table["listed_on"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
