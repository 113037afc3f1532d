"""Run every benchmark module of this package (`python -m bench [name ...]`, or `python -m bench
NAME --option ...` to hand options to one benchmark, e.g. `python -m bench replies --skip blind`)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def discover() -> list[str]:
    """Names of the benchmark modules: every public module in this package."""
    here = [str(Path(__file__).parent)]
    return sorted(m.name for m in pkgutil.iter_modules(here) if not m.name.startswith("_"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the named benchmarks (all when none are named); return a process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    first_option = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
    names, options = args[:first_option], args[first_option:]
    if options and len(names) != 1:
        print("options go to one benchmark: python -m bench NAME --option ...")
        return 2
    known = discover()
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(known)}")
        return 2
    for name in names or known:
        module = importlib.import_module(f"{__package__ or 'bench'}.{name}")
        run = getattr(module, "main", None)
        if run is None:
            continue
        if options and not inspect.signature(run).parameters:
            print(f"bench.{name} takes no options")
            return 2
        print(f"\n=== bench.{name} " + "=" * max(0, 60 - len(name)))
        start = time.perf_counter()
        run(options) if options else run()
        print(f"=== bench.{name} done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
