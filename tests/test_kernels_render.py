"""The device renderer's per-pixel math (render.cu, rig.cuh, face.cuh, sample.cuh), built for the CPU,
against the engine's own CPU path on real rendered frames, stage by stage, within one grey level:
head move, rig field + warp, mouth interior, blink, RGB -> I420 (whole frames through
`DeviceRenderer`: tests/test_kernels_device_render.py). The kernels run from render.cu itself, one
call per GPU thread (tests/cuda_on_cpu.py).
"""

import ctypes
from typing import Any

import cv2
import numpy as np
import pytest

from lipstream.engine.avatar import Avatar
from lipstream.engine.controls import LIP_ROUND
from lipstream.engine.idle import blink_coords
from lipstream.engine.mouth import interior
from lipstream.engine.render import RenderConfig, Renderer, _open_box, move_head
from lipstream.engine.rig import MAX_SHIFT
from lipstream.kernels import params
from tests.cuda_on_cpu import build_render_library

BLOCK = 16
# closed, open, wide with the jaw down, rounded, everything at once
POSES = {"closed": [0, 0, 0, 0, 0], "open": [0.8, 0.3, 0.2, 0, 0], "wide": [0.3, 0.9, 0.1, 0.5, 0.2],
         "round": [0.4, 0.1, 0.0, 0.2, 1.0], "all": [1, 1, 1, 1, 1]}
HEAD_FRAMES = (None, 40, 77)  # None: head held still; frame indices with different head poses
AVATARS = ("default", "portrait-obama.jpg", "small-240p.jpg")  # small-240p: upscaled, soft edges


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    return build_render_library(tmp_path_factory.mktemp("render"))


@pytest.fixture(scope="module", params=AVATARS)
def avatar(request: pytest.FixtureRequest) -> Avatar:
    if request.param == "default":
        return Avatar.default()
    return Avatar.from_image(request.getfixturevalue("shared_faces") / request.param)


@pytest.fixture(scope="module")
def renderer(avatar: Avatar) -> Renderer:
    return Renderer(avatar, RenderConfig(), seed=3)


def launch(lib: ctypes.CDLL, kernel: str, width: int, height: int, *args: Any) -> None:
    """A render.cu kernel run on the CPU over a width x height grid of threads."""
    grid = (-(-width // BLOCK), -(-height // BLOCK))
    getattr(lib, f"host_{kernel}")(*grid, BLOCK, BLOCK, *args)


def head_of(renderer: Renderer, frame: int | None) -> np.ndarray | None:
    return None if frame is None else renderer.head_pose(frame).inverse()


def assert_within_one_level(got: np.ndarray, want: np.ndarray) -> None:
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1, f"{(diff > 1).sum()} values more than one grey level off"


@pytest.mark.parametrize("frame", [0, 40, 77])
def test_head_move_matches_opencv(lib: ctypes.CDLL, avatar: Avatar, renderer: Renderer,
                                  frame: int) -> None:
    pose, size = renderer.head_pose(frame), avatar.size
    photo, got = np.ascontiguousarray(avatar.image), np.zeros_like(avatar.image)
    launch(lib, "ls_head_move", size, size, photo.ctypes.data, size, params.affine_d(pose.inverse()),
           got.ctypes.data)
    assert_within_one_level(got, move_head(avatar.image, pose, size))


def device_field(lib: ctypes.CDLL, avatar: Avatar, controls: np.ndarray,
                 head: np.ndarray | None) -> dict[str, Any]:
    """ls_rig_coarse then ls_rig_field: the mouth region warped into a copy of the photo."""
    rig, size = avatar.rig, avatar.size
    pose = rig.pose(controls)
    weights = -np.concatenate([pose.controls, [1.0]]).astype(np.float32)
    coarse = np.zeros(rig.basis.shape[1], np.float32)
    out = {"box": np.zeros(4, np.int32), "frame": np.ascontiguousarray(avatar.image).copy(),
           "coords": np.zeros((*rig.roi.shape, 2), np.float32)}
    out |= {k: np.zeros(rig.roi.shape, np.float32) for k in ("above", "below", "u")}
    n_coarse = coarse.size // 8
    launch(lib, "ls_rig_coarse", n_coarse, 1, rig.basis.ctypes.data, weights.ctypes.data, len(weights),
           n_coarse, MAX_SHIFT * rig.face_px, coarse.ctypes.data, out["box"].ctypes.data)
    field = params.field_params(rig, pose, head)
    launch(lib, "ls_rig_field", field.w, field.h, avatar.image.ctypes.data, size, coarse.ctypes.data,
           rig.u.ctypes.data, rig.v.ctypes.data, rig.upper_edge.ctypes.data, rig.lower_edge.ctypes.data,
           field, *(out[k].ctypes.data for k in ("frame", "coords", "above", "below", "u", "box")))
    return out | {"pose": pose, "params": field}


@pytest.mark.parametrize("head_frame", HEAD_FRAMES)
@pytest.mark.parametrize("pose", list(POSES))
def test_rig_field_and_warp_match_the_engine(lib: ctypes.CDLL, avatar: Avatar, renderer: Renderer,
                                             pose: str, head_frame: int | None) -> None:
    controls, head, rig = np.array(POSES[pose], np.float32), head_of(renderer, head_frame), avatar.rig
    got = device_field(lib, avatar, controls, head)
    want = rig.field(got["pose"], rig.place(head))
    np.testing.assert_allclose(got["coords"], want.coords, atol=1e-3)  # px
    for name in ("above", "below", "u"):
        np.testing.assert_allclose(got[name], getattr(want, name), atol=1e-3)
    frame = np.ascontiguousarray(avatar.image).copy()
    renderer.kernels.warp_region(avatar.image, want.coords, frame[rig.roi.slices])
    assert_within_one_level(got["frame"], frame)
    assert (frame != avatar.image).any()  # the mouth really moved
    box = _open_box(want, got["pose"])
    assert box is not None and list(got["box"]) == [box[1].start, box[0].start, box[1].stop - 1,
                                                   box[0].stop - 1]


@pytest.mark.parametrize("pose", list(POSES))
def test_mouth_interior_matches_the_engine(lib: ctypes.CDLL, avatar: Avatar, renderer: Renderer,
                                           pose: str) -> None:
    """The interior painted over the same warped frame, from the engine's own field."""
    rig, head = avatar.rig, head_of(renderer, 40)
    mouth_pose = rig.pose(np.array(POSES[pose], np.float32))
    field = rig.field(mouth_pose, rig.place(head))
    box = _open_box(field, mouth_pose)
    assert box is not None
    rounding = float(mouth_pose.controls[LIP_ROUND])
    colour, alpha = interior(avatar.mouth, field.u[box], field.above[box], field.below[box],
                             mouth_pose.corners_u, rounding)
    base = np.ascontiguousarray(avatar.image).copy()
    renderer.kernels.warp_region(avatar.image, field.coords, base[rig.roi.slices])
    want, got = base.copy(), base.copy()
    renderer.kernels.composite(want[rig.roi.slices][box], colour, alpha)
    corners = np.array([box[1].start, box[0].start, box[1].stop - 1, box[0].stop - 1], np.int32)
    launch(lib, "ls_mouth_interior", field.u.shape[1], field.u.shape[0], got.ctypes.data, avatar.size,
           field.above.ctypes.data, field.below.ctypes.data, field.u.ctypes.data,
           params.field_params(rig, mouth_pose, head),
           params.mouth_params(avatar.mouth, mouth_pose, rounding), corners.ctypes.data)
    assert_within_one_level(got, want)
    assert (want != base).any()  # something was painted


@pytest.mark.parametrize("head_frame", HEAD_FRAMES)
@pytest.mark.parametrize("amount", [0.3, 0.7, 1.0])
def test_blink_matches_the_engine(lib: ctypes.CDLL, avatar: Avatar, renderer: Renderer, amount: float,
                                  head_frame: int | None) -> None:
    head, eyes = head_of(renderer, head_frame), avatar.eyes
    photo = np.ascontiguousarray(avatar.image)
    want, got = photo.copy(), photo.copy()
    for region in eyes.regions:
        renderer.kernels.warp_region(photo, blink_coords(region, eyes.y_axis, amount, head),
                                     want[region.roi.slices])
        planes, blink = params.eye_planes(region), params.blink_params(region, eyes.y_axis, amount, head)
        launch(lib, "ls_blink", blink.w, blink.h, photo.ctypes.data, avatar.size, planes.ctypes.data,
               blink, got.ctypes.data)
    assert_within_one_level(got, want)
    assert (want != photo).any()  # the lids moved


def test_i420_is_what_sessions_hand_the_encoder(lib: ctypes.CDLL, avatar: Avatar,
                                                renderer: Renderer) -> None:
    """BT.601 limited range with cvtColor's chroma siting (the streaming worker converts with it)."""
    frame = renderer.render(np.array(POSES["open"], np.float32), 14)
    frame[:2, :4] = [[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]]  # the range's ends
    got = np.zeros((avatar.size * 3 // 2, avatar.size), np.uint8)
    launch(lib, "ls_i420", avatar.size // 2, avatar.size // 2, frame.ctypes.data, avatar.size,
           got.ctypes.data)
    assert_within_one_level(got, cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420))
    assert (got[0, 0], got[0, 1]) == (235, 16)  # limited range: white 235, black 16


def test_face_move_is_the_rigs_placement(avatar: Avatar, renderer: Renderer) -> None:
    """params.face_move restates RigBasis.place's similarity: the two must agree."""
    rig, head = avatar.rig, head_of(renderer, 77)
    move = params.face_move(rig, head)
    placed = rig.place(head)
    np.testing.assert_allclose(move[0, 0] * rig.u + move[0, 1] * rig.v + move[0, 2], placed.u, atol=1e-4)
    np.testing.assert_allclose(move[1, 0] * rig.u + move[1, 1] * rig.v + move[1, 2], placed.v, atol=1e-4)
