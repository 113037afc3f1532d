"""The application shell: CLI, server and web page over the `models` library."""
