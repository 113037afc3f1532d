"""Moved to `models.lifecycle.update_publish`: this name is an alias of that module (the same object)."""

import sys

from models.lifecycle import update_publish as _module

sys.modules[__name__] = _module
