"""Profiles: how big every notebook runs, decided in one place.

``tiny`` uses random tiny models and a few hundred examples so each notebook runs
in seconds (CI); ``cpu`` uses a real small pretrained model and minutes of
compute (a laptop); ``gpu`` uses the full-size models and data. The profile is
chosen from the device and can be forced with ``GPTNB_PROFILE``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from .device import pick_device


@dataclass(frozen=True)
class Profile:
    """Sizes and model names for every notebook under one profile."""

    name: str
    summary: str
    fallback_model: str  # loaded, with a printed line, when a named model cannot be had
    prompting_model: str  # notebooks 02 and 05 (the base model)
    generation_models: tuple[str, str]  # notebook 03: a GPT-2 and a GPT-Neo
    finetune_model: str  # notebook 04
    finetune_neo_model: str
    data_source: str  # a gptnb.data source name, or "auto"
    n_train: int
    n_val: int
    n_test: int
    shots: tuple[int, ...]  # notebook 02: k for k-shot prompts
    draws: int  # random draws of the k examples per k
    n_sweep: int  # notebook 02: validation tweets each prompt variant is scored on
    epochs: int
    batch_size: int
    learning_rate: float
    max_length: int  # tokens per training example, after truncation
    lora_rank: int
    lora_learning_rate: float  # LoRA moves few weights from a zero start: it takes a larger step than learning_rate
    max_new_tokens: int
    api_n_train: int  # notebook 05: tweets the API fine-tuning job (LoRA) trains on
    finetune_n_train: int  # notebook 04: tweets each of its fine-tuning runs trains on (`gptnb finetune` takes n_train)
    cache_lengths: tuple[int, ...] = (16, 32, 64, 128)  # notebook 03: sequence lengths its KV-cache timing measures

    def as_dict(self) -> dict:
        """The profile as plain data (for JSON and tables)."""
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        summary="random tiny models, a few hundred examples: seconds per notebook (CI)",
        fallback_model="tiny-gpt2",
        prompting_model="tiny-gpt2",
        generation_models=("tiny-gpt2", "tiny-gpt-neo"),
        finetune_model="tiny-gpt2",
        finetune_neo_model="tiny-gpt-neo",
        data_source="sample",
        n_train=160,
        n_val=40,
        n_test=40,
        shots=(0, 1, 2, 4),
        draws=2,
        n_sweep=40,
        epochs=2,
        batch_size=16,
        learning_rate=5e-4,
        max_length=64,
        lora_rank=4,
        lora_learning_rate=5e-3,
        max_new_tokens=16,
        # 64, not more: 04's fine-tunes then take 8 steps each (4 per epoch), which keeps make test-bf16 within
        # its 6 minutes on a CPU without bf16 units (half-precision matrix products there are 2.5-9x slower)
        api_n_train=64,
        finetune_n_train=64,
    ),
    "cpu": Profile(
        name="cpu",
        summary="a real small pretrained model, ~1k examples: minutes per notebook on a laptop",
        fallback_model="smollm2-135m",
        prompting_model="gpt2",
        generation_models=("gpt2", "gpt-neo-125m"),
        finetune_model="gpt2",
        finetune_neo_model="gpt-neo-125m",
        data_source="auto",
        n_train=1000,
        n_val=200,
        n_test=300,
        shots=(0, 1, 2, 4, 8),
        draws=3,
        n_sweep=60,  # notebook 02 measures recency on these tweets too: at least 50
        epochs=1,
        batch_size=8,  # notebook 04's full fine-tune of SmolLM2-135M then peaks under 4 GiB RSS
        learning_rate=1e-4,
        max_length=96,
        lora_rank=8,
        lora_learning_rate=5e-3,
        max_new_tokens=30,
        api_n_train=160,
        finetune_n_train=128,
    ),
    "gpu": Profile(
        name="gpu",
        summary="larger models and >=10k examples on one 16 GB GPU (Colab's free T4 is enough)",
        fallback_model="smollm2-135m",
        # Notebook 05 serves this model and LoRA-trains a second copy in one process: gpt2-large (774M) takes ~10 GB
        # on a T4 at batch 16 (fp16 serving, fp32 weights + fp16 autocast training); gpt2-xl would need ~19 GB.
        prompting_model="gpt2-large",
        generation_models=("gpt2-large", "gpt-neo-1.3b"),
        finetune_model="gpt2",
        finetune_neo_model="gpt-neo-125m",
        data_source="auto",
        n_train=10000,
        n_val=1000,
        n_test=2000,
        shots=(0, 1, 2, 4, 8),
        draws=5,
        n_sweep=500,
        epochs=3,
        batch_size=16,
        learning_rate=5e-5,
        max_length=128,
        lora_rank=16,
        lora_learning_rate=1e-3,
        max_new_tokens=60,
        api_n_train=2000,
        # Notebook 04's four runs (label-only, whole sequence, LoRA, head) x 3 epochs of 313 steps: ~6 min on a T4 by
        # the README's estimate (10000 tweets: ~10.5 min, and 04 had not finished in 440 s on the H200).
        finetune_n_train=5000,
        cache_lengths=(128, 256, 512, 1000),  # a GPU's uncached step stays cheap longer
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """The profile called `name`, else ``GPTNB_PROFILE``, else ``gpu`` on CUDA and ``cpu`` elsewhere."""
    chosen = name or os.environ.get("GPTNB_PROFILE") or ("gpu" if pick_device().type == "cuda" else "cpu")
    chosen = chosen.strip().lower()
    if chosen not in PROFILES:
        raise ValueError(
            f"unknown profile {chosen!r} (from {'the argument' if name else 'GPTNB_PROFILE'}); "
            f"choose one of {', '.join(PROFILES)}, e.g. GPTNB_PROFILE=tiny"
        )
    return PROFILES[chosen]
