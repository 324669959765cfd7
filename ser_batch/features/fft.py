"""The FFTs of the frame features: scipy's pocketfft kernel, called without importing ``scipy.fft``.

``import scipy.fft`` costs a scoring worker ~0.45 CPU s (it imports ``scipy.special``, scipy's
array-API layer and the docstring parser its decorators run, for functions the features never
call): most of a worker's first task. The transforms themselves are one compiled module,
``scipy.fft._pocketfft.pypocketfft``; this module loads that file alone (~1 ms) and calls it
with the arguments ``scipy.fft.rfft``, ``irfft`` and ``dct`` pass it for the calls made here
(default "backward" normalisation, one thread), so every result is the same to the last bit
(tests compare them). The module is registered under its own name in ``sys.modules``, so a
later ``import scipy.fft`` (librosa, for the classic recipe) uses the same one. Should the file
not be where scipy 1.x keeps it, ``scipy.fft`` itself is imported and used.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

#: The compiled kernel's module name inside scipy.
KERNEL = "scipy.fft._pocketfft.pypocketfft"

_kernel: Any = None


def kernel() -> Any:
    """The pocketfft module (loaded once per process); ``None`` when it cannot be loaded on its own
    (then :func:`rfft` and the others go through ``scipy.fft``)."""
    global _kernel
    if _kernel is None:
        _kernel = _load() or False
    return _kernel or None


def _load() -> Any:
    if KERNEL in sys.modules:
        return sys.modules[KERNEL]
    import importlib.machinery
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("scipy")  # finds the package without running its __init__
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations))) / "fft" / "_pocketfft"
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"pypocketfft{suffix}"
            if path.is_file():
                loader = importlib.machinery.ExtensionFileLoader(KERNEL, str(path))
                module_spec = importlib.util.spec_from_file_location(KERNEL, str(path), loader=loader)
                if module_spec is None:
                    return None
                module = importlib.util.module_from_spec(module_spec)
                loader.exec_module(module)
                # The calls below with this module's arguments: a scipy whose kernel takes others
                # (a new signature) falls back to scipy.fft here rather than failing in a task.
                probe = np.arange(4.0)
                module.c2r(module.r2c(probe, (-1,), True, 0, None, 1), (-1,), 4, False, 2, None, 1)
                module.dct(probe, 2, (-1,), 1, None, 1, None)
                module.good_size(5, True)
                sys.modules[KERNEL] = module
                return module
    except (ImportError, OSError, ValueError, TypeError, AttributeError):
        return None
    return None


def _prepared(x: np.ndarray, n: int | None, axis: int) -> np.ndarray:
    """``x`` as scipy's wrappers hand it to the kernel: floating (float16 widened, integers to
    float64), aligned, native byte order, and cut or zero-padded to ``n`` along ``axis``."""
    x = np.asarray(x)
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    elif x.dtype.kind not in "fc":
        x = x.astype(np.float64)
    if not x.flags.aligned or not x.dtype.isnative:
        x = np.array(x, dtype=x.dtype.newbyteorder("="), copy=True)
    if n is None:
        return x
    if n < 1:
        raise ValueError(f"invalid number of data points ({n}) specified")
    if x.shape[axis] >= n:
        index = [slice(None)] * x.ndim
        index[axis] = slice(0, n)
        return x[tuple(index)]
    shape = list(x.shape)
    shape[axis] = n
    padded = np.zeros(shape, x.dtype)
    index = [slice(None)] * x.ndim
    index[axis] = slice(0, x.shape[axis])
    padded[tuple(index)] = x
    return padded


def rfft(x: np.ndarray, n: int | None = None, axis: int = -1) -> np.ndarray:
    """``scipy.fft.rfft(x, n=n, axis=axis)``, bit for bit (float32 stays float32)."""
    module = kernel()
    if module is None:
        import scipy.fft

        return scipy.fft.rfft(x, n=n, axis=axis)
    x = _prepared(x, n, axis)
    if x.dtype.kind == "c":
        raise TypeError("x must be a real sequence")
    return module.r2c(x, (axis,), True, 0, None, 1)


def irfft(x: np.ndarray, n: int, axis: int = -1) -> np.ndarray:
    """``scipy.fft.irfft(x, n=n, axis=axis)``, bit for bit."""
    module = kernel()
    if module is None:
        import scipy.fft

        return scipy.fft.irfft(x, n=n, axis=axis)
    x = _prepared(x, None, axis)
    if x.dtype.kind != "c":
        x = x + 0.0j
    x = _prepared(x, n // 2 + 1, axis)
    return module.c2r(x, (axis,), n, False, 2, None, 1)


def dct_ortho(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``scipy.fft.dct(x, type=2, norm="ortho", axis=axis)`` of a real array, bit for bit."""
    module = kernel()
    if module is None:
        import scipy.fft

        return scipy.fft.dct(x, type=2, norm="ortho", axis=axis)
    x = _prepared(x, None, axis)
    if x.dtype.kind == "c":
        raise TypeError("dct_ortho takes a real array")
    return module.dct(x, 2, (axis,), 1, None, 1, None)


def next_fast_len(target: int) -> int:
    """``scipy.fft.next_fast_len(target, real=True)``: the smallest 2^a 3^b 5^c at or above ``target``."""
    module = kernel()
    if module is not None:
        return int(module.good_size(target, True))
    best = 1
    while best < target:
        best *= 2
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35
            while size < target:
                size *= 2
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best
