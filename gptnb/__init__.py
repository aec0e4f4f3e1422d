"""gptnb: the plumbing behind the GPT notebooks (device, profiles, models, data, plots).

The names below are imported on first use, so that ``import gptnb`` (and ``gptnb --help``)
does not load torch and transformers.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_HOMES = {
    "describe_device": ("device", "describe"),
    "pick_device": ("device", "pick_device"),
    "pick_dtype": ("device", "pick_dtype"),
    "hub_reachable": ("hub", "hub_reachable"),
    "MODELS": ("models", "MODELS"),
    "ModelUnavailableError": ("models", "ModelUnavailableError"),
    "count_parameters": ("models", "count_parameters"),
    "describe_model": ("models", "describe_model"),
    "load_model": ("models", "load_model"),
    "load_tokenizer": ("models", "load_tokenizer"),
    "PROFILES": ("profiles", "PROFILES"),
    "get_profile": ("profiles", "get_profile"),
    "start": ("banner", "start"),
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    """A name of `_HOMES`, or a submodule (``gptnb.models`` works after a bare ``import gptnb``)."""
    if name not in _HOMES:
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    module, attribute = _HOMES[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
