"""The old name of `gptnb.datacheck.formats` (moved in issue 24), kept as the same module until nothing uses it."""

import sys

from gptnb.datacheck import formats as _moved

sys.modules[__name__] = _moved
