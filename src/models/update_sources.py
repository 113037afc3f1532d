"""Moved to `models.lifecycle.update_sources`: this name is an alias of that module (the same object)."""

import sys

from models.lifecycle import update_sources as _module

sys.modules[__name__] = _module
