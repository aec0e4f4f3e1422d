"""The lines every notebook prints first: gptnb's version, the profile, the device and whether the hub answers."""

from __future__ import annotations

from .device import describe
from .hub import hub_reachable
from .profiles import Profile, get_profile


def start(profile: str | None = None) -> Profile:
    """Print the gptnb version, profile, device and hub status at the top of a notebook; return the profile."""
    from . import __version__

    chosen = get_profile(profile)
    print(f"gptnb {__version__} | profile {chosen.name}: {chosen.summary}")
    print(f"device: {describe()}")
    print(f"hub: {'reachable' if hub_reachable() else 'unreachable, so models and data come from offline copies'}")
    return chosen
