import pytest

from gptnb import profiles


def test_env_var_chooses_profile(monkeypatch):
    monkeypatch.setenv("GPTNB_PROFILE", "tiny")
    assert profiles.get_profile().name == "tiny"
    monkeypatch.setenv("GPTNB_PROFILE", " CPU ")
    assert profiles.get_profile().name == "cpu"


def test_argument_beats_env_var(monkeypatch):
    monkeypatch.setenv("GPTNB_PROFILE", "tiny")
    assert profiles.get_profile("gpu").name == "gpu"


def test_auto_profile_follows_device(monkeypatch):
    monkeypatch.delenv("GPTNB_PROFILE", raising=False)
    monkeypatch.setenv("GPTNB_DEVICE", "cpu")
    assert profiles.get_profile().name == "cpu"
    monkeypatch.setattr(profiles, "pick_device", lambda: __import__("torch").device("cuda"))
    assert profiles.get_profile().name == "gpu"


def test_unknown_profile_names_the_choices(monkeypatch):
    monkeypatch.setenv("GPTNB_PROFILE", "huge")
    with pytest.raises(ValueError, match=r"GPTNB_PROFILE.*tiny, cpu, gpu"):
        profiles.get_profile()


def test_profiles_grow_from_tiny_to_gpu():
    tiny, cpu, gpu = (profiles.PROFILES[name] for name in ("tiny", "cpu", "gpu"))
    assert tiny.n_train < cpu.n_train < gpu.n_train
    assert tiny.n_test <= cpu.n_test <= gpu.n_test
    assert gpu.n_train >= 10_000


def test_every_profile_names_known_models():
    from gptnb.models import MODELS

    for profile in profiles.PROFILES.values():
        for name in (
            profile.fallback_model,
            profile.prompting_model,
            profile.finetune_model,
            profile.finetune_neo_model,
            *profile.generation_models,
        ):
            assert name in MODELS, (profile.name, name)


def test_gpu_profile_fits_a_16_gb_t4():
    """Notebook 05 serves the prompting model in fp16 while LoRA-training a copy with fp32 weights; notebook 03 holds
    two generation models in fp16. Weights alone must leave most of a T4's 15 GiB for activations and the cache."""
    import gptnb

    gpu = profiles.get_profile("gpu")
    gib = 2**30
    serving_and_training = gptnb.count_parameters(gpu.prompting_model) * (2 + 4) / gib
    two_generators = sum(gptnb.count_parameters(name) for name in gpu.generation_models) * 2 / gib
    full_finetune = gptnb.count_parameters(gpu.finetune_model) * 16 / gib  # fp32 weights, gradients, Adam moments
    assert serving_and_training < 6, f"{gpu.prompting_model}: {serving_and_training:.1f} GiB of weights in notebook 05"
    assert two_generators < 6 and full_finetune < 4
    assert gpu.batch_size <= 16
