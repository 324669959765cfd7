"""A pretrained speaker encoder as a feature: Resemblyzer's GE2E voice encoder in numpy.

Resemblyzer (``resemblyzer`` 0.1.4 on PyPI, Apache-2.0; Jemine, "Real-Time Voice Cloning", 2019,
after Wan et al., "Generalized end-to-end loss for speaker verification", 2018) ships the weights
of a 3-layer LSTM of 256 units over 40-band mel frames (25 ms windows every 10 ms, power, not log),
trained for speaker verification; its final hidden state, through a Dense ReLU layer of 256 units
and L2-normalised, is an utterance embedding. The embeddings carry voice quality and speaking
style, which is partly what emotion changes; they are used here as an optional input
(``docs/accuracy.md``), never in the default path: the LSTM costs milliseconds of CPU per second of
audio.

* :func:`read_checkpoint` reads ``pretrained.pt`` (PyTorch's legacy serialisation: a pickle stream
  then raw storages) with a restricted unpickler that builds nothing but dicts and arrays: no
  torch, no code from the file.
* :func:`encoder_mel` is ``resemblyzer.audio.wav_to_mel_spectrogram`` (``librosa.feature.melspectrogram``
  with n_fft 400, hop 160, 40 Slaney mel bands, periodic Hann window, zero padding) in numpy.
* :class:`SpeakerEncoder` is ``resemblyzer.VoiceEncoder.forward`` in numpy, batched over partials.
  Equal to the reference (torch) to 1e-4 on generated audio: ``tests/test_features_ge2e.py`` holds
  the reference's outputs, made once with ``benchmarks/ge2e_reference.py``.
"""

from __future__ import annotations

import pickle
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ser_batch.errors import FeatureError

#: Audio rate of the encoder (Hz), its frames (samples per window and hop), mel bands.
SAMPLE_RATE = 16000
WINDOW = 400
HOP = 160
N_MELS = 40
#: Frames of one partial utterance (1.6 s).
PARTIAL_FRAMES = 160
HIDDEN = 256
LAYERS = 3
#: Arrays of a converted checkpoint, and their shapes.
ARRAY_SHAPES = {
    **{f"lstm.weight_ih_l{k}": (4 * HIDDEN, N_MELS if k == 0 else HIDDEN) for k in range(LAYERS)},
    **{f"lstm.weight_hh_l{k}": (4 * HIDDEN, HIDDEN) for k in range(LAYERS)},
    **{f"lstm.bias_ih_l{k}": (4 * HIDDEN,) for k in range(LAYERS)},
    **{f"lstm.bias_hh_l{k}": (4 * HIDDEN,) for k in range(LAYERS)},
    "linear.weight": (HIDDEN, HIDDEN),
    "linear.bias": (HIDDEN,),
}
#: PyTorch's legacy checkpoint: its magic number, and the storage types it may hold (dtype).
_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
             "LongStorage": np.int64, "IntStorage": np.int32}


class _Storage:
    """A storage named in the pickle, filled from the file's raw data afterwards."""

    def __init__(self, key: str, dtype: Any, size: int) -> None:
        self.key, self.dtype, self.size = key, dtype, size
        self.data: np.ndarray | None = None


class _Tensor:
    """A tensor of a storage (made into an array once the storages are read)."""

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise FeatureError(f"checkpoint storage {self.storage.key} has no data")
        item = data.itemsize
        end = self.offset + 1 + sum((s - 1) * st for s, st in zip(self.size, self.stride))
        if self.offset < 0 or end > len(data) or any(st < 0 for st in self.stride):
            raise FeatureError("checkpoint tensor reaches outside its storage")
        view = np.lib.stride_tricks.as_strided(data[self.offset :], shape=self.size,
                                               strides=tuple(st * item for st in self.stride))
        return np.array(view)


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any) -> _Tensor:
    return _Tensor(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    """Builds only what a state dict holds: (ordered) dicts, tensors of plain storages, numbers."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return name
        raise FeatureError(f"the checkpoint asks for {module}.{name}, which a state dict of arrays does not need")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and pid[1] in _STORAGES):
            raise FeatureError(f"unexpected persistent object in the checkpoint: {pid!r:.80}")
        key = str(pid[2])
        if key not in self.storages:
            self.storages[key] = _Storage(key, _STORAGES[pid[1]], int(pid[4]))
        return self.storages[key]


def read_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a legacy PyTorch checkpoint holding ``{"model_state": state_dict, ...}`` (or a
    state dict), read without torch and without running anything from the file.

    Raises
    ------
    FeatureError
        If the file is not such a checkpoint.
    """
    with Path(path).open("rb") as handle:
        try:
            if pickle.load(handle) != _MAGIC:  # noqa: S301 - numbers only (checked next)
                raise FeatureError(f"{path} is not a legacy PyTorch checkpoint (no magic number)")
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise FeatureError(f"{path} is not a legacy PyTorch checkpoint: {exc}") from None
        safe = _Unpickler(handle)
        safe.storages = {}
        safe.load()  # protocol version
        safe.load()  # system info (a dict of numbers and strings)
        state = safe.load()
        keys = safe.load()
        for key in keys:
            storage = safe.storages.get(str(key))
            if storage is None:
                raise FeatureError(f"checkpoint storage {key} is not used by any tensor")
            (count,) = struct.unpack("<q", handle.read(8))
            raw = handle.read(count * np.dtype(storage.dtype).itemsize)
            if count != storage.size or len(raw) != count * np.dtype(storage.dtype).itemsize:
                raise FeatureError(f"checkpoint storage {key} is truncated or of the wrong size")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    if isinstance(state, dict) and "model_state" in state:
        state = state["model_state"]
    if not isinstance(state, dict):
        raise FeatureError(f"{path} does not hold a state dict")
    return {str(k): v.array() for k, v in state.items() if isinstance(v, _Tensor)}


#: The licence note a bundle with a ``ge2e`` model carries beside the encoder's weights.
ENCODER_NOTICE = """# GE2E speaker encoder — licence note

`ge2e_encoder.npz` holds the weights of Resemblyzer's GE2E voice encoder (`resemblyzer` 0.1.4 on
PyPI, `resemblyzer/pretrained.pt`), converted to numpy arrays by ser-batch without change.

* Copyright 2019 Resemble.AI (author Corentin Jemine); licensed under the **Apache License 2.0**
  (https://www.apache.org/licenses/LICENSE-2.0): redistribution with this notice; no warranty.
* Source: https://github.com/resemble-ai/Resemblyzer, after Wan et al., "Generalized end-to-end
  loss for speaker verification" (ICASSP 2018).
* The `ge2e` model beside it (`ge2e_mlp.npz`) was trained by ser-batch on the bundle's training
  data; its terms are those of that data (see the bundle's other notes).
"""


def weights_path() -> Path:
    """Resemblyzer's ``pretrained.pt`` in the installed ``resemblyzer`` package (found without
    importing it: importing it imports torch). ``pip install --no-deps resemblyzer==0.1.4`` puts it
    there (``make install`` does).

    Raises
    ------
    FeatureError
        If the package is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec("resemblyzer")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "pretrained.pt"
        if path.is_file():
            return path
    raise FeatureError("the GE2E speaker encoder's weights come from the resemblyzer package, which is not "
                       "installed: pip install --no-deps resemblyzer==0.1.4 (no torch is needed)")


def encoder_arrays(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The encoder's arrays of a state dict, checked (names, shapes, finite), as float32.

    Raises
    ------
    FeatureError
        Naming the first array that is missing or does not fit.
    """
    out = {}
    for key, shape in ARRAY_SHAPES.items():
        if key not in state:
            raise FeatureError(f"the GE2E weights lack {key!r}")
        value = np.asarray(state[key], dtype=np.float32)
        if value.shape != shape or not np.all(np.isfinite(value)):
            raise FeatureError(f"GE2E array {key!r} has shape {value.shape} (expected {shape}) or is not finite")
        out[key] = value
    return out


def encoder_mel(y: np.ndarray) -> np.ndarray:
    """Mel power frames of a 16 kHz signal as the encoder's training computed them: ``(t, 40)``,
    float32, ``t = 1 + len(y) // 160`` (centred frames, zero padding)."""
    from ser_batch.features.fast import stft_magnitude
    from ser_batch.features.filterbanks import mel_basis

    magnitude = stft_magnitude(np.asarray(y, dtype=np.float32), n_fft=WINDOW, hop_length=HOP)
    return (magnitude * magnitude) @ mel_basis(SAMPLE_RATE, WINDOW, N_MELS).T


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


class SpeakerEncoder:
    """The GE2E encoder in numpy: :meth:`embed` maps partials of mel frames to unit embeddings."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        arrays = encoder_arrays(arrays)
        self.layers = [(arrays[f"lstm.weight_ih_l{k}"].T.copy(), arrays[f"lstm.weight_hh_l{k}"].T.copy(),
                        arrays[f"lstm.bias_ih_l{k}"] + arrays[f"lstm.bias_hh_l{k}"]) for k in range(LAYERS)]
        self.linear = (arrays["linear.weight"].T.copy(), arrays["linear.bias"])

    @classmethod
    def load(cls, path: Path | None = None) -> "SpeakerEncoder":
        """From Resemblyzer's ``pretrained.pt`` (default: the installed package's, :func:`weights_path`)."""
        return cls(read_checkpoint(Path(path) if path is not None else weights_path()))

    def embed(self, mels: np.ndarray) -> np.ndarray:
        """Embeddings ``(b, 256)`` (non-negative, unit length) of ``b`` partials ``(b, t, 40)`` of mel
        frames: the last layer's final hidden state, Dense ReLU, L2-normalised."""
        x = np.asarray(mels, dtype=np.float32)
        b, t, _ = x.shape
        for w_ih, w_hh, bias in self.layers:
            gates_in = (x.reshape(b * t, -1) @ w_ih + bias).reshape(b, t, -1)
            h = np.zeros((b, HIDDEN), dtype=np.float32)
            c = np.zeros((b, HIDDEN), dtype=np.float32)
            out = np.empty((b, t, HIDDEN), dtype=np.float32)
            for step in range(t):
                gates = gates_in[:, step] + h @ w_hh
                i, f = _sigmoid(gates[:, :HIDDEN]), _sigmoid(gates[:, HIDDEN : 2 * HIDDEN])
                g, o = np.tanh(gates[:, 2 * HIDDEN : 3 * HIDDEN]), _sigmoid(gates[:, 3 * HIDDEN :])
                c = f * c + i * g
                h = o * np.tanh(c)
                out[:, step] = h
            x = out
        z = np.maximum(h @ self.linear[0] + self.linear[1], 0.0)
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        return z / np.maximum(norm, 1e-12)


# ----------------------------------------------------------------- windows of a stream

#: Size of a window's embedding.
EMBEDDING_SIZE = HIDDEN


def window_samples(y: np.ndarray, starts: np.ndarray, ends: np.ndarray, *, hop_length: int,
                   offset: int = 0) -> list[np.ndarray]:
    """Each window's audio: the samples of its frames' hops, ``y[start * hop : end * hop]`` (frames
    ``[start, end)`` of the centred STFT), zeros past the signal's end.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32, the whole signal at :data:`SAMPLE_RATE`, or a stretch of it
        whose sample ``i`` is the signal's ``i - offset``
    starts, ends : np.ndarray [shape=(k,)], int, the windows' frames
    """
    out = []
    for start, end in zip(np.asarray(starts), np.asarray(ends)):
        a, b = int(start) * hop_length + offset, int(end) * hop_length + offset
        piece = np.zeros(b - a, dtype=np.float32)
        have = y[a : min(b, len(y))]
        piece[: len(have)] = have
        out.append(piece)
    return out


def embed_windows(encoder: "SpeakerEncoder", windows: list[np.ndarray]) -> np.ndarray:
    """The encoder's embedding of each window's audio (:func:`window_samples`): its mel frames run
    through the LSTM as one utterance. Windows of one length go through in one batch.

    Returns
    -------
    np.ndarray [shape=(k, 256)], float32, unit length
    """
    out = np.zeros((len(windows), EMBEDDING_SIZE), dtype=np.float32)
    lengths = np.array([len(w) for w in windows])
    for length in np.unique(lengths):
        pick = np.flatnonzero(lengths == length)
        mels = np.stack([encoder_mel(windows[i]) for i in pick])
        out[pick] = encoder.embed(mels)
    return out


_ENCODERS: dict[str, "SpeakerEncoder"] = {}


def cached_encoder(path: Path | None = None) -> "SpeakerEncoder":
    """The encoder of ``path`` (default: the installed resemblyzer package's weights), once per process."""
    key = str(path) if path is not None else ""
    if key not in _ENCODERS:
        _ENCODERS[key] = SpeakerEncoder.load(path)
    return _ENCODERS[key]
