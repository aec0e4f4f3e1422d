"""The engine's top layer: models by name, loaded on first use, each with the `batcher.Batcher` that decodes it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from .batcher import Batcher
from .decode import Loaded


class ModelPool:
    """Models by name, loaded on first use and kept (the `capacity` most recently used), each with its `Batcher`.

    `resolve(name)` maps a served name to ``(base, adapter folder or None)``: base names
    load with `gptnb.load_model`, fine-tuned ones add their LoRA adapter to a fresh base.
    `limits` are the `Batcher`'s (None: its defaults for the model's device). An evicted model's
    batcher finishes the requests it holds, then its thread ends (it runs only while it has work).
    """

    def __init__(self, resolve, capacity: int = 3, limits: dict | None = None):
        self.resolve, self.capacity, self.limits = resolve, capacity, limits or {}
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()  # `_loaded` and `_loading`; never held while a model loads
        self._loading: dict[str, threading.Lock] = {}  # one per name being loaded: it loads once

    def get(self, name: str) -> Loaded:
        """The loaded model served as `name` (raises `KeyError` for a name `resolve` does not know).

        A model is loaded outside the pool's lock: while an ``ft:`` model loads (seconds), the models already
        loaded keep answering; requests for the model being loaded wait for that one load."""
        with self._lock:
            if (loaded := self._kept(name)) is not None:
                return loaded
            base, adapter = self.resolve(name)
            loading = self._loading.setdefault(name, threading.Lock())
        with loading:
            with self._lock:
                if (loaded := self._kept(name)) is not None:  # loaded while this request waited
                    return loaded
            try:
                loaded = Loaded(*_load(base, adapter))
                loaded.batcher = Batcher(loaded, **self.limits)
            except BaseException:
                with self._lock:
                    self._loading.pop(name, None)
                raise
            with self._lock:
                self._loaded[name] = loaded
                self._loading.pop(name, None)
                while len(self._loaded) > self.capacity:
                    self._loaded.popitem(last=False)
            return loaded

    def _kept(self, name: str) -> Loaded | None:
        """The model kept as `name`, now the most recently used (the caller holds the lock), or None."""
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return self._loaded[name]
        return None

    def close(self) -> None:
        """Stop every batcher (the server is stopping): requests not finished end with an error."""
        with self._lock:
            for loaded in self._loaded.values():
                loaded.batcher.close()


def _load(base: str, adapter: Path | None):
    from ...models import load_model

    model, tokenizer = load_model(base)
    if adapter is None:
        return model, tokenizer
    from peft import PeftModel

    # Merging the adapter into the weights makes each token as fast as the base model's.
    return PeftModel.from_pretrained(model, adapter).merge_and_unload().eval(), tokenizer
