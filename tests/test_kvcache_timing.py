"""gptnb.kvcache.seconds, which notebook 03 times one new token with: the fastest timed run, the warm-up not counted."""

from gptnb import kvcache


def test_seconds_is_the_fastest_run_after_an_untimed_warm_up_and_resets_after_each(monkeypatch):
    clock = iter([0.0, 10.0, 13.0, 13.0, 15.0, 15.0, 19.0])  # the warm-up starts (no end read), then 3, 2 and 4 s
    monkeypatch.setattr(kvcache, "perf_counter", lambda: next(clock))
    calls = []
    best = kvcache.seconds(lambda: calls.append("step"), repeats=3, reset=lambda: calls.append("reset"))
    assert best == 2.0
    assert calls == ["step", "reset"] * 4
