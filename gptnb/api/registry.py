"""The old name of `gptnb.serve.registry` (moved in issue 24), kept as the same module until nothing uses it."""

import sys

from gptnb.serve import registry as _moved

sys.modules[__name__] = _moved
