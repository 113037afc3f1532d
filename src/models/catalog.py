"""Moved to `models.lifecycle.catalog`: this name is an alias of that module (the same object)."""

import sys

from models.lifecycle import catalog as _module

sys.modules[__name__] = _module
