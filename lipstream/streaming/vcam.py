"""Virtual camera sink: frames -> pyvirtualcam (RGB, 25 fps) for video calls and OBS.

A virtual camera carries no audio. The frames leave `latency` behind the microphone, so a call
app that takes the microphone directly plays the voice that much ahead of the lips; to keep
them together, route the audio through something that can delay it (e.g. OBS's sync offset).
"""

import platform
from dataclasses import dataclass
from typing import Any

import numpy as np

from lipstream.engine.constants import VIDEO_FPS
from lipstream.errors import DeviceError
from lipstream.streaming.worker import EngineFrame

LINUX_FIX = "load v4l2loopback: sudo modprobe v4l2loopback devices=1 exclusive_caps=1"
OTHER_FIX = "install OBS Studio and start its virtual camera once (Start Virtual Camera)"


@dataclass(frozen=True)
class VirtualCameraConfig:
    device: str | None = None  # e.g. /dev/video2 on Linux; None: the first free one
    backend: str | None = None  # pyvirtualcam backend (v4l2loopback, obs, unitycapture); None: any


def load_pyvirtualcam() -> Any:
    try:
        import pyvirtualcam
    except ImportError:
        raise DeviceError("pyvirtualcam is not installed: pip install 'lipstream[vcam]'") from None
    return pyvirtualcam


class VirtualCamera:
    """A FrameSink that hands each frame's RGB image to pyvirtualcam; the frame's audio is dropped."""

    def __init__(self, size: int, config: VirtualCameraConfig | None = None) -> None:
        self.config = config or VirtualCameraConfig()
        pyvirtualcam = load_pyvirtualcam()
        known = sorted(pyvirtualcam.camera.BACKENDS)
        if self.config.backend is not None and self.config.backend not in known:
            raise DeviceError(f"unknown virtual camera backend '{self.config.backend}': "
                              f"use one of {', '.join(known) or 'none on this system'}")
        try:
            self._camera: Any = pyvirtualcam.Camera(
                size, size, VIDEO_FPS, fmt=pyvirtualcam.PixelFormat.RGB,
                device=self.config.device, backend=self.config.backend)
        except RuntimeError as exc:
            raise DeviceError(self._explain(str(exc))) from None

    @property
    def device(self) -> str:
        return str(self._camera.device)

    def send(self, frame: EngineFrame) -> None:
        self._camera.send(np.ascontiguousarray(frame.image))

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None

    def _explain(self, reason: str) -> str:
        """pyvirtualcam's message lists every backend's failure over several lines; keep one."""
        first = reason.strip().splitlines()[0] if reason.strip() else "no backend could open a device"
        if self.config.device is not None:
            return f"cannot open virtual camera {self.config.device}: {first}"
        fix = LINUX_FIX if platform.system() == "Linux" else OTHER_FIX
        return f"no virtual camera device: {fix}"
