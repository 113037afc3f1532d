"""NumPy's BLAS for the one-row product of float32 weights.

torch multiplies with MKL, and MKL runs a product with a single row on one thread whatever the
thread count: for one token of a 0.5B model with 2 threads, the 151,936-token head took 28 ms
in `torch.mm` and 22 ms in NumPy's OpenBLAS (the wheels' BLAS), the MLP's products half as
long (`docs/benchmarks.md`, "Session 17"). NumPy shares the tensors' memory (`Tensor.numpy()`
is a view), so the one-row step can use it with no copy; its thread count follows the engine's.
Where NumPy's BLAS is not OpenBLAS, nothing changes.

`threadpoolctl` finds the library, but the count is set through OpenBLAS's own C functions:
in threadpoolctl 3.8 (`OpenBLASController.set_num_threads`), a count set on an OpenBLAS built
with pthreads is ignored in every Python thread but the first that set one (its "controlling
thread": the pool is process-wide, joblib/threadpoolctl#220), so a
scheduler's decoding thread could not lower the count, and every one-row step ran OpenBLAS's
product on 2 threads, whose worker then spun on the second core between steps (session 21).
"""

from __future__ import annotations

import ctypes
import functools
import itertools
from typing import Any

__all__ = ["OpenBLASThreads", "numpy_blas"]


class OpenBLASThreads:
    """OpenBLAS's process-wide thread count, read and set from any thread."""

    __slots__ = ("_get", "_set", "filepath")

    def __init__(self, filepath: str) -> None:
        lib = ctypes.CDLL(filepath)  # already loaded by NumPy: the same handle
        self.filepath = filepath
        # The wheels rename the symbols (scipy-openblas: `scipy_` prefix, `64_` suffix for the
        # 64-bit-integer build); threadpoolctl tries the same affixes.
        for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
            get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                put.restype, put.argtypes = None, [ctypes.c_int]
                self._get, self._set = get, put
                return
        raise LookupError(f"{filepath}: no openblas_get/set_num_threads")

    def get_num_threads(self) -> int:
        return int(self._get())

    def set_num_threads(self, n: int) -> None:
        self._set(int(n))


@functools.cache
def numpy_blas() -> OpenBLASThreads | None:
    """The thread count of NumPy's OpenBLAS (`get_num_threads`, `set_num_threads`), or None
    where NumPy uses another BLAS or its library cannot be inspected."""
    try:
        import numpy  # noqa: F401  (loads the BLAS that the controller looks for)
        from threadpoolctl import ThreadpoolController

        found: list[Any] = ThreadpoolController().select(internal_api="openblas").lib_controllers
        if not found:
            return None
        ours = next((c for c in found if "numpy" in c.filepath), found[0])  # not SciPy's own copy
        return OpenBLASThreads(ours.filepath)
    except Exception:  # no threadpoolctl, or it failed to inspect the process: keep torch's BLAS
        return None
