"""The old name of `gptnb.serve.security.guard` (moved in issue 24), kept as the same module until nothing uses it."""

import sys

from gptnb.serve.security import guard as _moved

sys.modules[__name__] = _moved
