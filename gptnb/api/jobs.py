"""The old name of `gptnb.serve.jobs.runner` (moved in issue 24), kept as the same module until nothing uses it."""

import sys

from gptnb.serve.jobs import runner as _moved

sys.modules[__name__] = _moved
