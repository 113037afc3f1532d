"""Moved to `models.lifecycle.version_control`: this name is an alias of that module (the same object)."""

import sys

from models.lifecycle import version_control as _module

sys.modules[__name__] = _module
