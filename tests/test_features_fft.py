"""Tests for :mod:`ser_batch.features.fft`: scipy's pocketfft kernel called directly equals ``scipy.fft``
bit for bit, with and without the direct kernel (the fallback imports scipy.fft)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from ser_batch.features import fft


@pytest.fixture(params=["kernel", "fallback"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "fallback":
        monkeypatch.setattr(fft, "_kernel", False)  # as if the compiled module could not be loaded alone
    else:
        assert fft.kernel() is not None, "the pocketfft kernel should load on its own with this scipy"
    return request.param


def _signals() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    frames = rng.standard_normal(5000).astype(np.float32)
    strided = np.lib.stride_tricks.sliding_window_view(frames, 512)[::128]  # yin's framing: a strided view
    return [rng.standard_normal((7, 2048)).astype(np.float32), rng.standard_normal((3, 1000)), strided,
            rng.integers(-5, 5, (4, 64)), rng.standard_normal((6, 33)).astype(np.float16)]


@pytest.mark.parametrize("n", [None, 1023, 1024, 4096])
def test_rfft_equals_scipy_bit_for_bit(mode: str, n: int | None) -> None:
    for x in _signals():
        got, want = fft.rfft(x, n=n, axis=-1), scipy.fft.rfft(x, n=n, axis=-1)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want)
    x = _signals()[0]
    assert np.array_equal(fft.rfft(x, n=n, axis=0), scipy.fft.rfft(x, n=n, axis=0))


@pytest.mark.parametrize("n", [1024, 2048, 1000, 3])
def test_irfft_equals_scipy_bit_for_bit(mode: str, n: int) -> None:
    rng = np.random.default_rng(1)
    spectrum = scipy.fft.rfft(rng.standard_normal((5, 1024)).astype(np.float32), axis=-1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2)  # a real input, as yin gives it
    for x in (spectrum, power, power.astype(np.float64)):
        got, want = fft.irfft(x, n=n, axis=-1), scipy.fft.irfft(x, n=n, axis=-1)
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_dct_and_fast_lengths_equal_scipy(mode: str) -> None:
    for n in (13, 40, 128):
        assert np.array_equal(fft.dct_ortho(np.eye(n), axis=0), scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0))
    x = np.random.default_rng(2).standard_normal((9, 128)).astype(np.float32)
    assert np.array_equal(fft.dct_ortho(x), scipy.fft.dct(x, type=2, norm="ortho"))
    assert [fft.next_fast_len(n) for n in range(1, 3000)] == [scipy.fft.next_fast_len(n, real=True)
                                                              for n in range(1, 3000)]


def test_bad_arguments_are_refused_like_scipy() -> None:
    with pytest.raises(ValueError, match="invalid number of data points"):
        fft.rfft(np.zeros(8), n=0)
    with pytest.raises(TypeError, match="real sequence"):
        fft.rfft(np.zeros(8, complex))


def test_scipy_fft_imported_after_the_kernel_uses_the_same_module() -> None:
    """A process that loads the kernel alone and later imports scipy.fft (librosa does, for the classic
    recipe) ends up with one kernel module, and scipy.fft works."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, numpy as np\n"
            "from ser_batch.features import fft\n"
            "kernel = fft.kernel()\n"
            "assert 'scipy.fft' not in sys.modules and kernel is not None\n"
            "import scipy.fft\n"
            "from scipy.fft._pocketfft import basic\n"
            "assert basic.pfft is kernel\n"
            "x = np.arange(16.0)\n"
            "assert np.array_equal(scipy.fft.rfft(x), fft.rfft(x))\n"
            "print('ok')\n")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
