"""One server of `bench/serve.py` in its own process, as `companion serve` runs in production:
the benchmark's clients then share no interpreter (and no GIL) with the server they measure.

`python -m bench._serve_child BATCH_ROWS INT8 [PROCESS]` prints the server's URL on one line, then serves
until it is terminated."""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    from bench.serve import _start_server

    batch_rows, int8, process = int(argv[0]), argv[1] == "1", argv[2:3] == ["1"]
    url, _server, thread = _start_server(batch_rows, int8=int8, process=process)
    print(url, flush=True)
    os.dup2(2, 1)  # the parent reads only that line: anything printed later goes to stderr, not a full pipe
    thread.join()


if __name__ == "__main__":
    main(sys.argv[1:])
