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
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # recorded, so that `go_offline`'s "1" is undone afterwards
    monkeypatch.delenv("HF_HUB_OFFLINE")
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


def test_gptnb_offline_switches_the_hub_library_offline(fresh, monkeypatch):
    monkeypatch.setenv("GPTNB_OFFLINE", "1")
    monkeypatch.setattr(hub.socket, "create_connection", _no_network)
    assert hub.hub_reachable() is False
    assert constants.is_offline_mode() and os.environ["HF_HUB_OFFLINE"] == "1"


def test_missing_model_with_gptnb_offline_is_substituted_without_any_network_attempt(fresh, monkeypatch, capsys):
    """The GPU run's bug: with GPTNB_OFFLINE=1, transformers still sent HEAD .../adapter_config.json with 5 retries."""
    from gptnb import load_model

    attempts = []

    def count(*args, **kwargs):
        attempts.append(args[:1])
        raise AssertionError("the network was tried")

    monkeypatch.setenv("GPTNB_OFFLINE", "1")
    monkeypatch.setattr(hub.socket, "create_connection", count)
    monkeypatch.setattr(hub.socket, "getaddrinfo", count)
    model, _ = load_model("gpt2-large", profile="tiny", device="cpu")
    assert attempts == []
    assert model.gptnb_info.name == "tiny-gpt2"
    assert "gptnb: asked for gpt2-large, loaded tiny-gpt2 (built locally) instead" in capsys.readouterr().out


def test_plain_http_endpoint_is_probed_on_port_80(fresh, monkeypatch):
    probed = []

    def refused(address, timeout):
        probed.append(address)
        raise ConnectionRefusedError

    monkeypatch.setattr(constants, "ENDPOINT", "http://hub.invalid")
    monkeypatch.setattr(hub.socket, "create_connection", refused)
    assert hub.hub_reachable() is False and probed == [("hub.invalid", 80)]


def test_reachable_hub_stays_online(fresh, monkeypatch):
    class Connection:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(hub.socket, "create_connection", lambda *args, **kwargs: Connection())
    assert hub.hub_reachable() is True and not constants.is_offline_mode()
