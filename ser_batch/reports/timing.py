"""One definition of the run timings every job prints (``extract``, ``score``, the demo, ``_run.json``).

* ``wall_s``: seconds of the whole command, from its start to its summary, *including* loading
  the bundle and starting (or joining) Ray; ``ray_start_s`` is the Ray part of it.
* realtime factor: seconds of audio / ``wall_s`` (what a user waiting for the command sees);
  ``realtime_factor_per_core``: seconds of audio / CPU seconds the workers spent in their tasks
  (what one core does once the runtime is up; Ray's start and the driver are not in it).
"""

from __future__ import annotations


def realtime_factor(audio_s: float, wall_s: float) -> float:
    """Seconds of audio per second of the whole command (0 when nothing ran)."""
    return audio_s / wall_s if wall_s > 0 else 0.0


def per_core_factor(audio_s: float, cpu_s: float) -> float:
    """Seconds of audio per CPU second inside the workers (0 when no task ran)."""
    return audio_s / cpu_s if cpu_s > 0 else 0.0


def timing(wall_s: float, ray_start_s: float | None, audio_s: float | None = None) -> str:
    """``in 14.7 s (43x realtime over the whole run incl. Ray start 9.1 s)``: the time of the whole
    command, labelled with what it includes (no realtime factor when ``audio_s`` is ``None``;
    no Ray part when Ray was not started)."""
    inside = [f"{realtime_factor(audio_s, wall_s):.0f}x realtime over the whole run"] if audio_s is not None else []
    if ray_start_s is not None:
        inside.append(ray_part(ray_start_s))
    return f"in {wall_s:.1f} s ({' '.join(inside)})" if inside else f"in {wall_s:.1f} s"


def ray_part(ray_start_s: float) -> str:
    """``incl. Ray start 9.1 s``."""
    return f"incl. Ray start {ray_start_s:.1f} s"
