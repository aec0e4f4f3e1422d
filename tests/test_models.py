import pytest
import torch

import gptnb
from gptnb import models


def test_real_gpt2_tokenizer_offline(offline):
    tokenizer = gptnb.load_tokenizer("gpt2")
    assert tokenizer("Hello world").input_ids == [15496, 995]
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == 50256
    assert tokenizer.pad_token_id == 50256  # GPT-2 has no pad token: eos is reused
    assert len(tokenizer) == 50257
    assert tokenizer.decode(tokenizer(" unbelievable tokenization").input_ids) == " unbelievable tokenization"


def test_gpt_neo_shares_the_gpt2_tokenizer_offline(offline):
    assert gptnb.load_tokenizer("gpt-neo-125m")("Hello world").input_ids == [15496, 995]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("gpt2", 124_439_808),
        ("gpt2-medium", 354_823_168),
        ("gpt-neo-125m", 125_198_592),
        ("smollm2-135m", 134_515_008),
        ("openai-gpt", 116_534_784),
    ],
)
def test_count_parameters_from_config_alone(offline, name, expected):
    assert gptnb.count_parameters(name) == expected


def test_tiny_models_are_deterministic_and_generate(offline, tiny_gpt2):
    model, tokenizer = tiny_gpt2
    assert model.gptnb_info.name == "tiny-gpt2" and not model.gptnb_info.substituted
    assert not model.training
    again, _ = gptnb.load_model("tiny-gpt2", device="cpu")
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)
    ids = tokenizer("The cat", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.input_ids.shape[1] + 5


def test_tiny_gpt_neo_has_global_and_local_attention(offline):
    model, tokenizer = gptnb.load_model("tiny-gpt-neo", device="cpu")
    assert model.config.attention_layers == ["global", "local"]
    assert tokenizer("Hello world").input_ids == [15496, 995]


def test_unavailable_model_is_substituted_with_a_printed_line(offline, capsys):
    model, tokenizer = gptnb.load_model("gpt2", profile="tiny", device="cpu")
    line = capsys.readouterr().out
    assert "asked for gpt2, loaded tiny-gpt2" in line and "hub is unreachable" in line
    assert model.gptnb_info.substituted and model.gptnb_info.requested == "gpt2"
    assert "in place of gpt2" in gptnb.describe_model(model)
    ids = tokenizer("Hello", return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=3, do_sample=False).shape[1] == ids.input_ids.shape[1] + 3


def test_strict_raises_naming_the_remedy(offline):
    with pytest.raises(gptnb.ModelUnavailableError, match=r"cannot load 'gpt2'.*hub is unreachable.*Remedies"):
        gptnb.load_model("gpt2", strict=True, profile="tiny")


def test_offline_status_lists_the_offline_models(offline, monkeypatch):
    assert models.offline_status("tiny-gpt2").startswith("offline copy")
    assert models.offline_status("gpt3-175b") == "unavailable"
    monkeypatch.setattr(models, "_in_hf_cache", lambda hub_id: False)
    assert models.offline_status("gpt2") == "tokenizer only"
    monkeypatch.setattr(models, "_in_hf_cache", lambda hub_id: hub_id == "openai-community/gpt2")
    assert models.offline_status("gpt2") == "cached"


def test_offline_copy_is_built_atomically(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("GPTNB_CACHE", str(tmp_path))

    def broken(tmp):
        (tmp / "half.bin").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        models._atomic_dir(tmp_path / "models" / "x", broken)
    assert not (tmp_path / "models" / "x").exists()
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.slow
def test_smollm2_offline_answers_the_seed_prompt(offline):
    model, tokenizer = gptnb.load_model("smollm2-135m", device="cpu")
    prompt = (
        "Below are some examples for sentiment detection of movie reviews.\n\n"
        "Review: I am sure this will become a hit movie.\nSentiment: Positive\n\n"
        "Review: Such a bad movie! Avoid!\nSentiment: Negative\n\n"
        "Review: The plot was not so good!\nSentiment:"
    )
    ids = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=2, do_sample=False)
    assert tokenizer.decode(out[0, ids.input_ids.shape[1] :]).strip().startswith("Negative")


def test_full_name_gives_the_models_own_name_for_a_short_one():
    from gptnb.models import ModelInfo, full_name

    assert full_name("smollm2-135m") == "SmolLM2-135M-Instruct (smollm2-135m)"
    assert full_name("gpt2", "hub") == "gpt2 (hub)" and full_name("tiny-gpt2") == "tiny-gpt2"
    substituted = ModelInfo(requested="gpt2", name="smollm2-135m", source="offline copy", reason="offline")
    assert str(substituted) == "SmolLM2-135M-Instruct (smollm2-135m; offline copy), in place of gpt2"
