"""gptnb.hub: offline mode is huggingface_hub's own switch; an unreachable hub switches it on."""

import os
import subprocess
import sys

import pytest
from huggingface_hub import constants

from gptnb import hub


@pytest.fixture
def fresh(monkeypatch):
    """A fresh answer from `hub_reachable`, and the hub library's switch restored afterwards."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("GPTNB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub.hub_reachable.cache_clear()
    yield
    hub.hub_reachable.cache_clear()


def _no_network(*args, **kwargs):
    raise AssertionError("the network was tried")


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "GPTNB_OFFLINE"])
def test_offline_variables_are_honoured(variable):
    """Each variable, set before the process starts, means offline (as huggingface_hub reads it)."""
    code = "from gptnb import hub; print(hub.offline())"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "GPTNB_OFFLINE"}
    }
    for value, expected in (("1", "True"), ("0", "False")):
        done = subprocess.run(
            [sys.executable, "-c", code], env=env | {variable: value}, capture_output=True, text=True, timeout=60
        )
        assert done.stdout.strip() == expected, done.stderr


def test_offline_mode_answers_without_the_network(fresh, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub.socket, "create_connection", _no_network)
    assert hub.hub_reachable() is False


def test_unreachable_hub_switches_the_hub_library_offline(fresh, monkeypatch):
    def refused(*args, **kwargs):
        raise ConnectionRefusedError

    monkeypatch.setattr(hub.socket, "create_connection", refused)
    assert not constants.is_offline_mode()
    assert hub.hub_reachable() is False
    assert constants.is_offline_mode() and os.environ["HF_HUB_OFFLINE"] == "1"


def test_reachable_hub_stays_online(fresh, monkeypatch):
    class Connection:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(hub.socket, "create_connection", lambda *args, **kwargs: Connection())
    assert hub.hub_reachable() is True and not constants.is_offline_mode()
