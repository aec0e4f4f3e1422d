"""Generation helpers for notebook 03: decoding presets, batched generation, the top next tokens, a playground.

The lessons themselves (one forward pass, the greedy loop) are written out in the
notebook; this module holds what the notebook repeats.
"""

from __future__ import annotations

import html

import pandas as pd
import torch

STRATEGIES = ("greedy", "beam search", "sampling")


def decoding_kwargs(
    strategy: str,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    num_beams: int = 4,
) -> dict:
    """`model.generate` arguments for a strategy of `STRATEGIES` and the playground's knobs.

    Temperature, top-k and top-p only matter when sampling; ``top_k=0`` and ``top_p=1`` switch them off.
    """
    if strategy == "greedy":
        kwargs = {"do_sample": False}
    elif strategy == "beam search":
        kwargs = {"do_sample": False, "num_beams": num_beams, "early_stopping": True}
    elif strategy == "sampling":
        if temperature <= 0:
            raise ValueError(
                "temperature must be > 0 when sampling; for the single most likely text use strategy='greedy'"
            )
        kwargs = {"do_sample": True, "temperature": temperature, "top_k": top_k, "top_p": top_p}
    else:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return {**kwargs, "repetition_penalty": repetition_penalty}


# The strategies notebook 03 compares side by side, as `model.generate` keyword arguments.
# Sampling presets set every sampling knob, so a model's own generation defaults cannot change them.
PRESETS: dict[str, dict] = {
    "greedy": decoding_kwargs("greedy"),
    "beam search": decoding_kwargs("beam search"),
    "temperature 0.7": decoding_kwargs("sampling", temperature=0.7),
    "top-k 40": decoding_kwargs("sampling", top_k=40),
    "top-p 0.9": decoding_kwargs("sampling", top_p=0.9),
    "repetition penalty 1.3": decoding_kwargs("greedy", repetition_penalty=1.3),
}


@torch.no_grad()
def generate_text(
    model, tokenizer, prompts: str | list[str], max_new_tokens: int = 30, seed: int | None = 0, **kwargs
) -> list[str]:
    """The continuations (new text only) of one or more prompts, generated in one left-padded batch.

    Left padding puts every prompt's last token at the end of the row, where generation
    continues; the attention mask keeps the pads out of attention. `seed` makes sampling
    repeatable; `kwargs` go to `model.generate` (a `PRESETS` entry, or `decoding_kwargs`).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        inputs = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    finally:
        tokenizer.padding_side = side
    if seed is not None:
        torch.manual_seed(seed)
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **kwargs)
    return tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def top_tokens(tokenizer, probabilities: torch.Tensor, k: int = 10) -> pd.DataFrame:
    """The `k` most likely next tokens of a probability vector over the vocabulary, as a table."""
    values, ids = probabilities.float().topk(k)
    return pd.DataFrame(
        {
            "token": [tokenizer.decode([i]) for i in ids.tolist()],
            "id": ids.tolist(),
            "probability": values.tolist(),
        }
    )


def playground(model, tokenizer, prompt: str = "The meaning of life is", max_new_tokens: int = 30):
    """An ipywidgets form (prompt, strategy, temperature, top-k, top-p, repetition penalty, length) that prints the
    continuation. It runs once with its defaults, so it also works headless; that first continuation goes out beside
    the form as `playground_html`, for a page without a kernel (`gptnb.widgets.display_with_static_form`)."""
    import ipywidgets as widgets

    from .widgets import display_with_static_form

    def show(prompt, strategy, temperature, top_k, top_p, repetition_penalty, max_new_tokens):
        kwargs = decoding_kwargs(strategy, temperature, top_k, top_p, repetition_penalty)
        text = prompt + generate_text(model, tokenizer, prompt, max_new_tokens, **kwargs)[0]
        print(text)
        return text  # the form keeps it as its result (interactive does not display it)

    form = widgets.interactive(
        show,
        prompt=widgets.Textarea(value=prompt, continuous_update=False, layout=widgets.Layout(width="90%")),
        strategy=widgets.Dropdown(options=STRATEGIES, value="sampling"),
        temperature=widgets.FloatSlider(value=0.8, min=0.1, max=2.0, step=0.1, continuous_update=False),
        top_k=widgets.IntSlider(value=50, min=0, max=200, step=5, continuous_update=False),
        top_p=widgets.FloatSlider(value=0.95, min=0.05, max=1.0, step=0.05, continuous_update=False),
        repetition_penalty=widgets.FloatSlider(value=1.0, min=1.0, max=2.0, step=0.05, continuous_update=False),
        max_new_tokens=widgets.IntSlider(value=max_new_tokens, min=1, max=200, continuous_update=False),
    )
    settings = {name: value for name, value in form.kwargs.items() if name != "prompt"}
    display_with_static_form(form, playground_html(form.result, settings))
    return form


def playground_html(text: str, settings: dict) -> str:
    """The playground's static form: what it wrote with `settings`, and that changing them needs a running notebook."""
    used = ", ".join(f"{name}={value}" for name, value in settings.items())
    return (
        '<div class="gptnb-playground"><p><b>Playground.</b> Its settings change in a running notebook (JupyterLab or '
        f"Colab). With {html.escape(used)} it wrote:</p>"
        f'<pre style="white-space: pre-wrap">{html.escape(text)}</pre></div>'
    )
