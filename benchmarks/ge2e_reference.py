"""Make the reference outputs of Resemblyzer's GE2E encoder that ser-batch's numpy port is tested
against (tests/golden/ge2e_reference.json). Runs with torch and resemblyzer installed, never in the
product: once, in a scratch environment, e.g.

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 librosa webrtcvad-wheels
    /tmp/torchvenv/bin/pip install --no-deps resemblyzer==0.1.4
    /tmp/torchvenv/bin/python benchmarks/ge2e_reference.py

The signals are generated from seeds (numpy only; the test makes them the same way and checks
their hash), so no audio is stored.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "golden" / "ge2e_reference.json"


def reference_signal(seed: int, seconds: float = 3.2, rate: int = 16000) -> np.ndarray:
    """A voiced, vowel-like signal with a gliding pitch and noise: numpy only (PCG64 draws are the
    same in every numpy release). tests/test_features_ge2e.py has the same function."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 110.0 + 40.0 * seed + 30.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    y = sum(np.sin(k * phase) / k for k in range(1, 12))
    y *= 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    y += 0.02 * rng.standard_normal(len(t))
    return (0.1 * y / np.abs(y).max()).astype(np.float32)


def main() -> int:
    import torch
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import wav_to_mel_spectrogram

    torch.set_num_threads(1)
    encoder = VoiceEncoder(device="cpu", verbose=False)
    entries = []
    for seed in (0, 1, 2):
        y = reference_signal(seed)
        mel = wav_to_mel_spectrogram(y)
        partials = np.stack([mel[s : s + 160] for s in (0, 80, 150)])
        with torch.no_grad():
            embeds = encoder(torch.from_numpy(partials)).numpy()
        entries.append({"seed": seed, "signal_sha256": hashlib.sha256(y.tobytes()).hexdigest(),
                        "mel_frames": int(len(mel)), "mel_head": mel[:12].round(7).tolist(),
                        "mel_sum": float(mel.astype(np.float64).sum()), "partial_starts": [0, 80, 150],
                        "embeddings": embeds.round(7).tolist()})
    import resemblyzer

    OUT.write_text(json.dumps({"made_with": {"torch": torch.__version__, "resemblyzer": "0.1.4",
                                             "numpy": np.__version__},
                               "entries": entries}, indent=1) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
