"""NumPy's BLAS for the one-row product of float32 weights.

torch multiplies with MKL, and MKL runs a product with a single row on one thread whatever the
thread count: for one token of a 0.5B model with 2 threads, the 151,936-token head took 28 ms
in `torch.mm` and 22 ms in NumPy's OpenBLAS (the wheels' BLAS), the MLP's products half as
long (`docs/benchmarks.md`, "Session 17"). NumPy shares the tensors' memory (`Tensor.numpy()`
is a view), so the one-row step can use it with no copy; its thread count follows the engine's
through `threadpoolctl`. Where NumPy's BLAS is not OpenBLAS, nothing changes.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["numpy_blas"]


@functools.cache
def numpy_blas() -> Any:
    """threadpoolctl's controller of NumPy's OpenBLAS (`set_num_threads`, `get_num_threads`),
    or None where NumPy uses another BLAS or threadpoolctl cannot find it."""
    try:
        import numpy  # noqa: F401  (loads the BLAS that the controller looks for)
        from threadpoolctl import ThreadpoolController

        found = ThreadpoolController().select(internal_api="openblas").lib_controllers
    except Exception:  # no threadpoolctl, or it failed to inspect the process: keep torch's BLAS
        return None
    return found[0] if found else None
