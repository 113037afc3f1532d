"""Moved to `models.lifecycle.update_config`: this name is an alias of that module (the same object)."""

import sys

from models.lifecycle import update_config as _module

sys.modules[__name__] = _module
