"""The name scripts written for the flat layout use: ``ser_batch.bundle`` is :mod:`ser_batch.models.bundle`."""

import sys

from ser_batch.models import bundle as _bundle

sys.modules[__name__] = _bundle
