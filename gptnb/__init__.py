"""gptnb: the plumbing behind the GPT notebooks (device, profiles, models, data, plots)."""
from .device import describe as describe_device
from .device import pick_device, pick_dtype
from .models import (
    MODELS,
    ModelUnavailableError,
    count_parameters,
    describe_model,
    hub_reachable,
    load_model,
    load_tokenizer,
)
from .profiles import PROFILES, get_profile, start

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "PROFILES",
    "ModelUnavailableError",
    "count_parameters",
    "describe_device",
    "describe_model",
    "get_profile",
    "hub_reachable",
    "load_model",
    "load_tokenizer",
    "pick_device",
    "pick_dtype",
    "start",
]
