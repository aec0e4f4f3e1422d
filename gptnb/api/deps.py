"""The old name of `gptnb.serve.deps` (moved in issue 24), kept as the same module until nothing uses it."""

import sys

from gptnb.serve import deps as _moved

sys.modules[__name__] = _moved
