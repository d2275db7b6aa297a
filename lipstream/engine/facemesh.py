"""Face landmarks with mediapipe FaceMesh (478 refined points), for any photo size.

FaceMesh's own detector is the short-range one: it misses faces that fill only a small part of a
large frame (two people at a podium). The full-range detector finds those; FaceMesh then runs on a
crop around each. mediapipe graphs are not thread-safe, so one lock guards the cached instances.
"""

import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from lipstream.engine.native_log import native_stderr_silenced

N_LANDMARKS = 478
_lock = threading.Lock()
_graphs: dict[str, Any] = {}
_quiet_runs: set[str] = set()  # graphs whose first run (which logs to fd 2) is over


@dataclass(frozen=True)
class FaceFound:
    landmarks: np.ndarray  # (478, 2) float32, pixels of the image searched

    @property
    def height_px(self) -> float:
        """Forehead-to-chin extent of the mesh."""
        return float(np.ptp(self.landmarks[:, 1]))

    @property
    def box(self) -> tuple[float, float, float, float]:
        x0, y0 = self.landmarks.min(axis=0)
        x1, y1 = self.landmarks.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)


def _process(name: str, rgb: np.ndarray) -> Any:
    """Run one graph under the lock; its set-up and first run keep their log lines to themselves."""
    with _lock:
        if name in _quiet_runs:
            return _graph(name).process(np.ascontiguousarray(rgb))
        with native_stderr_silenced():
            result = _graph(name).process(np.ascontiguousarray(rgb))
        _quiet_runs.add(name)
        return result


def _graph(name: str) -> Any:
    import mediapipe as mp

    if name not in _graphs:
        if name == "mesh":
            _graphs[name] = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, refine_landmarks=True, max_num_faces=5)
        else:
            _graphs[name] = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=0.5)
    return _graphs[name]


def _mesh(rgb: np.ndarray) -> list[FaceFound]:
    h, w = rgb.shape[:2]
    result = _process("mesh", rgb)
    faces = []
    for face in result.multi_face_landmarks or []:
        pts = np.array([(p.x * w, p.y * h) for p in face.landmark], dtype=np.float32)
        faces.append(FaceFound(pts))
    return faces


def _detect_boxes(rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Full-range face boxes (x0, y0, x1, y1) in pixels."""
    h, w = rgb.shape[:2]
    result = _process("detect", rgb)
    boxes = []
    for det in result.detections or []:
        b = det.location_data.relative_bounding_box
        boxes.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h))
    return boxes


def _mesh_in_box(rgb: np.ndarray, box: tuple[float, float, float, float]) -> FaceFound | None:
    """FaceMesh on a square crop 3x the detector's box (edge-replicated), mapped back."""
    x0, y0, x1, y1 = box
    side = 3.0 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    out = 384  # enough pixels for the landmark model (it works at 192-256 px)
    scale = out / side
    matrix = np.array([[scale, 0, out / 2 - scale * cx], [0, scale, out / 2 - scale * cy]], np.float64)
    crop = cv2.warpAffine(rgb, matrix, (out, out), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    faces = _mesh(crop)
    if not faces:
        return None
    best = min(faces, key=lambda f: float(np.hypot(*(f.landmarks.mean(0) - out / 2))))
    return FaceFound(((best.landmarks - matrix[:, 2]) / scale).astype(np.float32))


def _overlaps(face: FaceFound, box: tuple[float, float, float, float]) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0, y0, x1, y1 = face.box
    return x0 <= cx <= x1 and y0 <= cy <= y1


def find_faces(rgb: np.ndarray) -> list[FaceFound]:
    """Every face found, largest first."""
    faces = _mesh(rgb)
    for box in _detect_boxes(rgb):
        if any(_overlaps(f, box) for f in faces):
            continue
        found = _mesh_in_box(rgb, box)
        if found is not None:
            faces.append(found)
    return sorted(faces, key=lambda f: -f.height_px)


def landmarks_of_largest(rgb: np.ndarray) -> np.ndarray | None:
    """(478, 2) float32 landmarks of the largest face by FaceMesh alone, or None (for checks)."""
    faces = _mesh(rgb)
    if not faces:
        return None
    return max(faces, key=lambda f: f.height_px).landmarks
