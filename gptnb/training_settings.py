"""Training settings: the one place that decides a fine-tuning run's epochs, learning rate, batch size and LoRA rank,
for ``gptnb finetune`` (`gptnb.finetune_cli`) and the server's fine-tuning jobs alike.

What is not given comes from the profile (`gptnb.profiles`); ``"auto"`` is OpenAI's rule where it has one
(`default_epochs`). LoRA moves few weights from a zero start and takes the profile's larger
``lora_learning_rate``; a learning-rate multiplier (the fine-tuning API's) scales whichever applies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .profiles import Profile

AUTO = "auto"


def default_epochs(n_examples: int) -> int:
    """OpenAI's rule for ``n_epochs="auto"``: 3 epochs, more for tiny sets (≥100 examples seen), fewer for huge ones."""
    if n_examples * 3 < 100:
        return min(25, max(1, 100 // max(n_examples, 1)))
    if n_examples * 3 > 25_000:
        return max(1, 25_000 // n_examples)
    return 3


@dataclass(frozen=True)
class TrainingSettings:
    """`gptnb.finetune.finetune`'s sizes for one run (``finetune(model, tokenizer, train, **settings.as_dict())``)."""

    epochs: float
    batch_size: int
    learning_rate: float
    lora_rank: int | None  # None: every weight is trained
    max_length: int

    def as_dict(self) -> dict:
        """The settings as `finetune`'s keyword arguments."""
        return dataclasses.asdict(self)


def training_settings(
    profile: Profile,
    n_examples: int,
    *,
    epochs: float | str | None = None,
    batch_size: int | str | None = None,
    learning_rate: float | None = None,
    learning_rate_multiplier: float | str | None = None,
    lora: bool | int | None = None,
    max_length: int | None = None,
) -> TrainingSettings:
    """The settings of a run on `n_examples` training examples under `profile`.

    - `epochs`: a number; None: the profile's; ``"auto"``: OpenAI's rule for `n_examples` (`default_epochs`).
    - `batch_size`: a number; None or ``"auto"``: the profile's, at most `n_examples`.
    - `lora`: None or False trains every weight; True trains LoRA adapters of the profile's rank; a number, that rank.
    - `learning_rate`: a number is used as it is; else the profile's (``lora_learning_rate`` with LoRA,
      ``learning_rate`` without) times `learning_rate_multiplier` (None or ``"auto"``: 1).
    - `max_length`: tokens per example; None: the profile's.
    """
    rank = profile.lora_rank if lora is True else (lora or None)
    if learning_rate is None:
        multiplier = 1.0 if learning_rate_multiplier in (None, AUTO) else learning_rate_multiplier
        learning_rate = (profile.lora_learning_rate if rank else profile.learning_rate) * multiplier
    return TrainingSettings(
        epochs=default_epochs(n_examples) if epochs == AUTO else profile.epochs if epochs is None else epochs,
        batch_size=min(profile.batch_size, n_examples) if batch_size in (None, AUTO) else batch_size,
        learning_rate=learning_rate,
        lora_rank=rank,
        max_length=max_length or profile.max_length,
    )
