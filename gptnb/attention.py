"""No fully masked attention rows: in gptnb's SDPA attention every padding position attends to itself.

Why. Batches are padded on the left (`gptnb.collate.CompletionCollator`, batched generation). Under the causal mask
a pad before a row's first real token has no key it may attend to: its whole row of the 4-D mask is False. What
`scaled_dot_product_attention` then returns depends on the backend: the math and memory-efficient kernels give zeros
(torch >= 2.5, pytorch/pytorch#133882), transformers itself made such rows attend to every key below torch 2.5
(pytorch/pytorch#110213), and cuDNN's backward on Hopper GPUs gives NaN gradients when a row's logsumexp is very
negative (pytorch/pytorch#196678): the likely cause of the NaN losses of the one H200 run in bf16.

The cure in place: such rows do not exist. `PADS_ATTEND_TO_THEMSELVES` is transformers' own SDPA attention under
its own name, registered with ``AttentionInterface`` and, for its mask, ``AttentionMaskInterface``: the mask is
transformers' `sdpa_mask` with the diagonal added (query position p may always see key position p). A real token
already sees itself, and no query sees another row's pads, so every real position's output is exactly what it was
(tests/test_device.py compares the real positions' logits, the loss and every gradient with plain ``"sdpa"``);
only the outputs at the pads change, and the loss (-100 labels there) and the scoring never read those. A mask
with no padding still becomes None, so unpadded batches keep SDPA's ``is_causal`` path (and its fused kernels).
`use_on` switches a loaded model to it; `gptnb.load_model` does so for every model that loaded with ``"sdpa"``.

Evidence (tests/test_device.py, on a CPU): an attention kernel written with no special case for rows that see no
key (softmax over all -inf is NaN) trains tiny-gpt2 and a tiny Llama to a NaN loss and NaN gradients on left-padded
batches under transformers' mask, since the pad rows' NaN reaches every real position through weights @ values, as
on the H200; under this mask the same kernel gives plain SDPA's loss. Both models also train in bf16 on such batches
with finite losses and gradients. Not yet run on a GPU: that the H200's NaN is gone is expected, as #196678's
trigger (a -inf logsumexp) no longer occurs, not observed. `gptnb.device.padding_safe_attention` (cuDNN
and flash off while training) stays as a second guard until a GPU run shows it is not needed.

Works with transformers 5.2, the floor (`sdpa_mask` takes ``cache_position``), and newer ones (``q_length`` and
``q_offset``): tests/test_device.py's attention tests pass under 5.24 and under 5.2.0 (its wheel unpacked on the path,
its version check loosened for huggingface-hub 2.4).
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

PADS_ATTEND_TO_THEMSELVES = "gptnb_sdpa"  # "sdpa" in the name: transformers checks the model supports SDPA


def _query_positions(kwargs: dict) -> torch.Tensor:
    """The absolute positions of the queries a mask is made for, as either transformers version passes them."""
    if kwargs.get("cache_position") is not None:  # transformers < 5.18 or so
        return kwargs["cache_position"]
    offset = kwargs.get("q_offset", 0)
    return torch.arange(kwargs["q_length"], device=kwargs.get("device", "cpu")) + offset


def pads_attend_to_themselves_mask(**kwargs) -> torch.Tensor | None:
    """transformers' SDPA mask (True: may attend) with every query position allowed to see its own key."""
    mask = sdpa_mask(**kwargs)
    if mask is None:  # no padding: SDPA's is_causal
        return None
    queries = _query_positions(kwargs).to(mask.device)
    keys = torch.arange(mask.shape[-1], device=mask.device) + kwargs.get("kv_offset", 0)
    return mask | (queries[:, None] == keys[None, :])


AttentionInterface.register(PADS_ATTEND_TO_THEMSELVES, sdpa_attention_forward)
AttentionMaskInterface.register(PADS_ATTEND_TO_THEMSELVES, pads_attend_to_themselves_mask)


def use_on(model):
    """Switch `model` from transformers' ``"sdpa"`` to `PADS_ATTEND_TO_THEMSELVES`; other implementations (eager,
    as GPT-Neo has, gives fully masked rows a uniform softmax, never NaN) are left as they are. Returns `model`."""
    if model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(PADS_ATTEND_TO_THEMSELVES)
    return model
