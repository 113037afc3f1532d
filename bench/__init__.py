"""Benchmarks that print ratios against a named peer, measured side by side in one process.

Every `bench/<name>.py` module with a `main()` is a benchmark; `python -m bench` runs them all,
`python -m bench decode` only the named ones.
"""
