"""The model side of fine-tuning: LoRA adapters, trainable-parameter counts, embeddings, saving and loading."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def fit_embeddings(model, tokenizer) -> bool:
    """Grow the model's embedding matrix when the tokenizer has tokens it lacks (after `add_special_tokens`)."""
    if len(tokenizer) <= model.get_input_embeddings().num_embeddings:
        return False
    model.resize_token_embeddings(len(tokenizer))
    return True


def add_lora(model, rank: int, alpha: int | None = None, dropout: float = 0.05):
    """Wrap `model` with LoRA adapters of `rank` on its attention projections (peft's defaults per architecture).

    Only the adapters train; the base weights are frozen (and modified in place by the wrapping).
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha or 2 * rank,
        lora_dropout=dropout,
        task_type="CAUSAL_LM",
        fan_in_fan_out=model.config.model_type == "gpt2",
    )  # GPT-2 stores its weights transposed
    return get_peft_model(model, config)


def count_trainable(model) -> tuple[int, int]:
    """(trainable, total) parameters."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def save_finetuned(model, tokenizer, path: str | Path, merge: bool = True) -> Path:
    """Save a fine-tuned model with its tokenizer.

    A LoRA model is merged into full weights (in place: `model` keeps no adapters afterwards)
    unless ``merge=False``; then only the small adapter is written, and `load_finetuned` needs
    its base model where it was.
    """
    path = Path(path)
    if merge and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load_finetuned(path: str | Path, device: torch.device | str | None = None):
    """``(model, tokenizer)`` saved by `save_finetuned` (full weights or a LoRA adapter), in eval mode, with
    `gptnb.attention`'s padding-safe attention as `gptnb.load_model` gives."""
    from . import attention
    from .device import pick_device

    path = Path(path)
    if (path / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return attention.use_on(model).to(device or pick_device()).eval(), tokenizer
