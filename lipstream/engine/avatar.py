"""Avatar: one face photo analysed once (crop, landmarks, rig basis, mouth and eye assets).

Immutable after analysis, so many sessions can share one Avatar.
"""

import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lipstream.engine.constants import size_problem
from lipstream.engine.faceframe import CHIN, LOWER_OUTER, UPPER_OUTER, FaceFrame
from lipstream.engine.facemesh import FaceFound, find_faces, landmarks_of_largest
from lipstream.engine.idle import EyeAssets, analyse_eyes
from lipstream.engine.mouth import MouthAssets, analyse_mouth
from lipstream.engine.photo import Photo, decode_photo
from lipstream.engine.rig import RigBasis, build_rig
from lipstream.errors import ConfigError, PhotoError

DEFAULT_NAME = "the default avatar (scikit-image astronaut)"
SMALLEST_FACE_SHARE = 1 / 8  # of a photo's short side: smaller faces may lose detail in decoding


@dataclass(frozen=True)
class AvatarConfig:
    size: int = 512  # output frame side in px
    crop_scale: float = 2.0  # crop side / face height (forehead to chin): keeps hair, chin, neck
    crop_shift: float = 0.12  # crop centre below the face centre, in face heights (room for the neck)
    min_face_px: int = 64  # smallest face (forehead to chin, px in the photo) accepted
    max_megapixels: float = 50.0  # larger photos are refused before decoding

    def __post_init__(self) -> None:
        """Refused here, not as an OpenCV assertion at the first frame after seconds of analysis."""
        if (problem := size_problem(self.size, "AvatarConfig size")) is not None:
            raise ConfigError(problem)  # I420 and H.264 halve both sides
        if not 0 < self.crop_scale < math.inf:
            raise ConfigError(f"AvatarConfig crop_scale {self.crop_scale}: use a positive number "
                              f"(crop side / face height, e.g. {AvatarConfig.crop_scale})")


@dataclass(frozen=True, eq=False)
class Avatar:
    name: str  # the photo's file name, for messages
    image: np.ndarray  # (S, S, 3) uint8 RGB crop, read-only
    landmarks: np.ndarray  # (478, 2) float32, crop pixels
    frame: FaceFrame
    rig: RigBasis
    mouth: MouthAssets
    eyes: EyeAssets

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    @classmethod
    def from_image(cls, photo: Photo, config: AvatarConfig | None = None,
                   name: str | None = None) -> "Avatar":
        """A photo file, its bytes or an RGB array -> the analysed avatar. Raises PhotoError."""
        config = config or AvatarConfig()
        name = name or photo_name(photo)
        rgb = decode_photo(photo, name, config.max_megapixels, decode_side_px(config))
        return analyse(rgb, name, config)

    @classmethod
    def default(cls, config: AvatarConfig | None = None) -> "Avatar":
        return _default(config or AvatarConfig())


@functools.lru_cache(maxsize=4)
def _default(config: AvatarConfig) -> Avatar:
    from skimage import data

    return analyse(np.asarray(data.astronaut()), DEFAULT_NAME, config)  # type: ignore[no-untyped-call]


def photo_name(photo: Photo) -> str:
    """How messages call a photo: its file name where it has one."""
    if isinstance(photo, (str, Path)):
        return Path(photo).name
    return "the image array" if isinstance(photo, np.ndarray) else "the photo"


def decode_side_px(config: AvatarConfig) -> int:
    """The short side a photo may be decoded down to without degrading the avatar.

    The crop is face height x crop_scale, resized to config.size: it loses nothing while the face
    is at least size / crop_scale px (256 at 512 / 2.0). Faces down to SMALLEST_FACE_SHARE of the
    short side keep that (2048 px at the defaults); a 49 MP JPEG then decodes at half scale.
    """
    return math.ceil(config.size / config.crop_scale / SMALLEST_FACE_SHARE)


def pick_face(rgb: np.ndarray, name: str, config: AvatarConfig) -> FaceFound:
    faces = find_faces(rgb)
    hint = f"use a frontal photo where the face is at least {config.min_face_px} px tall"
    if not faces:
        raise PhotoError(f"no face found in {name}: {hint}")
    if len(faces) > 1:
        # A warning, not also a log record: a program with logging set up (the CLI) showed both.
        # The caller can act on it (crop the photo), and filter it or make it an error.
        warnings.warn(f"{len(faces)} faces found in {name}: using the largest", stacklevel=4)
    face = faces[0]
    if face.height_px < config.min_face_px:
        raise PhotoError(f"the face in {name} is only {face.height_px:.0f} px tall: {hint}")
    _check_visible(face, rgb.shape, name)
    return face


def _check_visible(face: FaceFound, shape: tuple[int, ...], name: str) -> None:
    """The mouth and chin must lie inside the photo: the rig cannot invent them."""
    needed = face.landmarks[list(UPPER_OUTER + LOWER_OUTER + (CHIN,))]
    h, w = shape[:2]
    margin = 1.0
    inside = (needed[:, 0] >= -margin) & (needed[:, 0] <= w + margin) & (needed[:, 1] >= -margin)
    inside &= needed[:, 1] <= h + margin
    if not inside.all():
        raise PhotoError(f"the mouth or chin in {name} is cut off by the photo's edge: "
                         "use a photo showing the whole lower face")


def crop_square(rgb: np.ndarray, face: FaceFound, config: AvatarConfig) -> tuple[np.ndarray, np.ndarray]:
    """Square crop around the head at config.size, edge-replicated past the photo's border.

    Returns the crop and the 2x3 matrix taking photo pixels to crop pixels.
    """
    frame = FaceFrame.from_landmarks(face.landmarks)
    x0, y0, x1, y1 = face.box
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) + frame.y_axis * config.crop_shift * frame.face_px
    side = config.crop_scale * frame.face_px
    scale = config.size / side
    matrix = np.array([[scale, 0.0, config.size / 2 - scale * centre[0]],
                       [0.0, scale, config.size / 2 - scale * centre[1]]])
    pre = int(1.0 / scale)  # shrink by an integer factor first, area-averaged, so detail does not alias
    if pre > 1:
        h, w = rgb.shape[0] // pre, rgb.shape[1] // pre
        rgb = cv2.resize(rgb[: h * pre, : w * pre], (w, h), interpolation=cv2.INTER_AREA)
        # small pixel i covers photo pixels [i pre, (i + 1) pre): its centre is i pre + (pre - 1) / 2
        offset = matrix[:, :2] @ np.full(2, (pre - 1) / 2) + matrix[:, 2]
        small_matrix = np.hstack([matrix[:, :2] * pre, offset[:, None]])
    else:
        small_matrix = matrix
    flags = cv2.INTER_LINEAR if scale < 1.0 else cv2.INTER_CUBIC
    crop = cv2.warpAffine(rgb, small_matrix, (config.size, config.size), flags=flags,
                          borderMode=cv2.BORDER_REPLICATE)
    return crop, matrix


def analyse(rgb: np.ndarray, name: str, config: AvatarConfig) -> Avatar:
    face = pick_face(rgb, name, config)
    crop, matrix = crop_square(rgb, face, config)
    # FaceMesh again on the crop: precise landmarks at the working scale
    landmarks = landmarks_of_largest(crop)
    if landmarks is None:
        landmarks = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    landmarks = landmarks.astype(np.float32)
    crop.setflags(write=False)
    landmarks.setflags(write=False)
    frame = FaceFrame.from_landmarks(landmarks)
    return Avatar(
        name=name,
        image=crop,
        landmarks=landmarks,
        frame=frame,
        rig=build_rig(landmarks, frame, config.size),
        mouth=analyse_mouth(crop, landmarks, frame, upscale=float(np.hypot(*matrix[0, :2]))),
        eyes=analyse_eyes(landmarks, frame, config.size),
    )

