"""The old name of `gptnb.serve.engine.batcher` (moved in issue 24), kept as the same module until nothing uses it."""

import sys

from gptnb.serve.engine import batcher as _moved

sys.modules[__name__] = _moved
