"""The old name of `gptnb.serve.routes` (moved in issue 24), kept as the same module until nothing uses it."""

import sys

from gptnb.serve import routes as _moved

sys.modules[__name__] = _moved
