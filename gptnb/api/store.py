"""The old name of `gptnb.serve.jobs.store` (moved in issue 24), kept as the same module until nothing uses it."""

import sys

from gptnb.serve.jobs import store as _moved

sys.modules[__name__] = _moved
