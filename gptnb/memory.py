"""Memory use, measured with psutil so that it works alike on Linux, macOS and Windows.

`peak_rss_gib` is the process's largest resident set so far; `PeakMemory` measures one block.
"""

from __future__ import annotations

import threading

import psutil
import torch

SAMPLE_SECONDS = 0.02


class _RssSampler:
    """The largest RSS of this process seen by a daemon thread that reads it every 20 ms until `stop()`."""

    def __init__(self):
        self.peak, self._process, self._done, self._lock = 0, psutil.Process(), threading.Event(), threading.Lock()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="gptnb-rss-sampler")
        self._thread.start()

    def observe(self) -> int:
        """Take one sample now (as well as the thread's); return the peak so far in bytes."""
        rss = self._process.memory_info().rss
        with self._lock:
            self.peak = max(self.peak, rss)
            return self.peak

    def _sample(self):
        while True:
            self.observe()
            if self._done.wait(SAMPLE_SECONDS):
                return

    def stop(self):
        """End the sampling with one last sample, so that what is resident at the end is counted."""
        self._done.set()
        self._thread.join()
        self.observe()


# Windows reports the peak working set itself; elsewhere psutil gives only the current RSS, so it is sampled
# from the moment this module is imported.
_PROCESS_PEAK = None if hasattr(psutil.Process().memory_info(), "peak_wset") else _RssSampler()


def peak_rss_gib() -> float:
    """The largest resident set (RSS) this process has had so far, in GiB.

    On Windows the operating system's own peak; elsewhere the largest of the RSS samples taken
    every 20 ms since `gptnb.memory` was imported and at each call (this one included).
    """
    peak = psutil.Process().memory_info().peak_wset if _PROCESS_PEAK is None else _PROCESS_PEAK.observe()
    return peak / 2**30


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.gib``: the most memory used inside the block.

    On CUDA, allocated GPU memory; elsewhere the process's RSS, sampled every 20 ms by a thread
    (the process-wide `peak_rss_gib` cannot tell one block from what ran before it).
    """

    def __init__(self, device: torch.device | None = None):
        self.device, self.gib = device or torch.device("cpu"), 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._sampler = _RssSampler()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.gib = torch.cuda.max_memory_allocated(self.device) / 2**30
        else:
            self._sampler.stop()
            self.gib = self._sampler.peak / 2**30
