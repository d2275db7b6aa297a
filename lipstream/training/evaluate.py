"""Measuring a rendered mouth the way a viewer would: re-detect the face and read the lip gap.

Used by the tests and by benchmarks/lipsync.py. FaceMesh runs on the rendered pixels, so a
render only scores if it still looks like a face, with an open mouth where the audio says so.
"""

from dataclasses import dataclass
from types import TracebackType

import numpy as np

from lipstream.engine.native_log import native_stderr_silenced

# FaceMesh indices: inner lips at the centre, and the face's vertical extent for scale.
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
FOREHEAD, CHIN = 10, 152
MOUTH_CORNERS = (61, 291)


@dataclass(frozen=True)
class MouthReading:
    found: bool
    aperture: float  # inner-lip gap / face height (forehead to chin); 0 when closed or not found
    width: float = float("nan")  # mouth corner to corner / face height; NaN when not found


class MouthMeter:
    """FaceMesh in video mode over a sequence of frames (tracking, as a viewer's eye would)."""

    def __init__(self, static: bool = False) -> None:
        import mediapipe as mp

        with native_stderr_silenced():
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=0.5, min_tracking_confidence=0.5,
            )
        self._first = True

    def read(self, image: np.ndarray) -> MouthReading:
        """image: (H, W, 3) uint8 RGB."""
        if self._first:  # the graph logs on its first run
            with native_stderr_silenced():
                result = self._mesh.process(np.ascontiguousarray(image))
            self._first = False
        else:
            result = self._mesh.process(np.ascontiguousarray(image))
        if not result.multi_face_landmarks:
            return MouthReading(found=False, aperture=0.0)
        h, w = image.shape[:2]
        pts = np.array([(p.x * w, p.y * h) for p in result.multi_face_landmarks[0].landmark])
        face_height = max(float(np.linalg.norm(pts[CHIN] - pts[FOREHEAD])), 1.0)
        gap = float(np.linalg.norm(pts[LOWER_INNER_LIP] - pts[UPPER_INNER_LIP]))
        width = float(np.linalg.norm(pts[MOUTH_CORNERS[1]] - pts[MOUTH_CORNERS[0]]))
        return MouthReading(found=True, aperture=gap / face_height, width=width / face_height)

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "MouthMeter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_video_frames(path: str) -> tuple[list[np.ndarray], float]:
    """Decode an mp4 -> RGB frames and its video frame rate."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate or 0)
