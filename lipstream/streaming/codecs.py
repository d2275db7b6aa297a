"""VP8 encoder settings for the server's video senders, chosen for rendered talking faces.

aiortc builds its libvpx encoder lazily inside `Vp8Encoder.encode`, with settings meant for camera
video and no public way to change them. `tune_vp8()` makes aiortc create `TunedVp8Encoder` instead:
the same encoder (aiortc's own code runs unchanged), whose codec context takes `Vp8Tuning`'s values
over aiortc's whenever aiortc assigns its options and thread count. Everything else (bitrate control,
keyframes, packetisation) stays aiortc's.

Why these values (measured by `benchmarks/vp8.py`; figures in `docs/profile.md`):
- noise_sensitivity 0: aiortc asks for libvpx's temporal denoiser (4), which filters sensor noise
  out of camera frames; rendered frames carry none, so it only costs CPU (and blurs the skin).
- cpu_used -12: libvpx's realtime speed (negative: a fixed speed, larger is faster); aiortc uses -6.
  With the denoiser off it still decodes closer to the sent frames than aiortc's settings do.
  -16 is cheaper still but loses ~7 dB as soon as the whole picture moves (its motion search
  gives up), so it is not used.
- threads 1: a session is one of many on the machine; a second encoder thread per session only
  adds contention (aiortc already picks 1 below 640x480, but more on a large machine above it).
"""

from dataclasses import dataclass
from typing import Any

import aiortc.codecs
from aiortc.codecs.vpx import Vp8Encoder


@dataclass(frozen=True)
class Vp8Tuning:
    cpu_used: int = -12  # libvpx realtime speed, -16 (fastest) .. 16; aiortc's own is -6
    noise_sensitivity: int = 0  # temporal denoiser strength, 0 (off) .. 6; aiortc's own is 4
    threads: int = 1  # encoder threads per sender

    def options(self) -> dict[str, str]:
        return {"cpu-used": str(self.cpu_used), "noise-sensitivity": str(self.noise_sensitivity)}


TUNING = Vp8Tuning()


class _TunedContext:
    """aiortc's codec context, taking the tuning's values whenever aiortc configures it."""

    def __init__(self, context: Any, tuning: Vp8Tuning) -> None:
        object.__setattr__(self, "_context", context)
        object.__setattr__(self, "_tuning", tuning)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "options":
            value = {**value, **self._tuning.options()}
        elif name == "thread_count":
            value = self._tuning.threads
        setattr(self._context, name, value)


class TunedVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder with `TUNING` applied to each codec context it creates."""

    tuning = TUNING

    @property
    def codec(self) -> Any:
        return self._tuned

    @codec.setter
    def codec(self, context: Any) -> None:
        self._tuned = None if context is None else _TunedContext(context, self.tuning)


def tune_vp8() -> None:
    """Make every VP8 sender aiortc creates from now on use `TunedVp8Encoder` (idempotent)."""
    # aiortc.codecs.get_encoder looks the class up in its module at each call
    aiortc.codecs.Vp8Encoder = TunedVp8Encoder  # type: ignore[attr-defined]
