"""The framework: `framework_tool.get_framework()` (model manager + plugins) and `plugins/`."""
