"""The whole frame rendered on an NVIDIA GPU: render.cu's kernels, one CUDA stream per session.

`DeviceRenderer` makes the same frames as `engine.render.Renderer` (within one grey level per
stage; tests/test_kernels_render.py) and hands back I420, what the video encoder takes, so a frame
crosses PCIe once. Per frame, on its stream: the photo moved by the head pose (only when the pose
changed; otherwise copied on the device), the rig's coarse field, the field over the mouth region
with the photo sampled through it, the mouth interior, the blink, RGB -> I420, and one copy down.
Up per frame: the five mouth controls. The photo, the rig's basis and edges and the eyes' planes
go up once; every device buffer is allocated once, in the constructor.

The host keeps what is decided per frame, not per pixel: the mouth pose, the head pose and the
blink amount (a `Renderer` on the CPU gives them, so the two renderers cannot drift apart).
Importing this module needs neither cuda-python nor a GPU; constructing `DeviceRenderer` needs both.
"""

import ctypes
import threading
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lipstream.engine.avatar import Avatar
from lipstream.engine.controls import LIP_ROUND
from lipstream.engine.idle import HeadPose
from lipstream.engine.render import Drawn, RenderConfig, Renderer
from lipstream.engine.rig import MAX_SHIFT, MouthPose
from lipstream.kernels import params
from lipstream.kernels.build import RENDER, bindings
from lipstream.kernels.cuda import _blocks, load_program
from lipstream.kernels.driver import check, current_context, open_device, release

PIXEL_BLOCK = (16, 16)  # threads per block over an image's (x, y): 256, eight 32-thread warps
POINT_BLOCK = 256  # threads per block over the coarse grid's points, flattened
BOX_INTS = 4  # the interior's bounding box: min x, min y, max x, max y
Arg = ctypes.c_uint64 | ctypes.c_int32 | ctypes.c_float | ctypes.Structure


class DeviceRenderer:
    name = "cuda"

    def __init__(self, avatar: Avatar, config: RenderConfig | None = None, seed: int = 0,
                 device_index: int = 0) -> None:
        self._host = Renderer(avatar, replace(config or RenderConfig(), device="cpu"), seed)
        self._avatar, self.size = avatar, avatar.size
        self._cu, nvrtc = bindings()
        self._device, self._context = open_device(self._cu, device_index)
        self._buffers: dict[str, tuple[Any, int]] = {}  # role -> (device pointer, bytes)
        with self._current():
            kernels = load_program(self._cu, nvrtc, device_index, RENDER)
            self._fn = dict(zip(RENDER.kernels, kernels, strict=True))
            self._stream = check(self._cu, self._cu.cuStreamCreate(0), "create a stream")
        self._finalizer = weakref.finalize(self, release, self._cu, self._device, self._context,
                                           self._stream, self._buffers)
        self._finalizer.atexit = False
        self._lock = threading.Lock()  # one frame's copies and launches at a time on the stream
        self._moved: HeadPose | None = None  # the head pose the "moved" buffer holds
        self._drawn: Drawn | None = None  # the last frame returned without `out` (its image: I420)
        with self._current():
            self._allocate()

    @property
    def still(self) -> bool:
        config = self._host.config
        return config.head_rotation_deg == 0 and config.head_shift_px == 0

    def render_i420(self, controls: NDArray[Any], index: int,
                    out: NDArray[Any] | None = None) -> NDArray[Any]:
        """Frame `index` with the mouth at `controls` ((5,) in [0, 1]) as I420 (S * 3 / 2, S) uint8,
        written into `out` when given (e.g. the encoder's own buffer). Without `out`, the very array
        last returned when the picture would be the same (an idle face, as `Renderer.render`
        decides it: nothing launched, nothing copied; do not write to it)."""
        if out is not None:
            return self._render(controls, index, self._output(out))
        head = None if self.still else self._host.head_pose(index)
        blink = self._host.blink_amount(index)
        if self._drawn is not None and self._drawn.shows(controls, head, blink):
            return self._drawn.image
        image = self._render(controls, index, self._output(None))
        self._drawn = Drawn(np.array(controls, np.float32), head, blink, image)
        return image

    def _render(self, controls: NDArray[Any], index: int, out: NDArray[Any]) -> NDArray[Any]:
        pose = self._host.pose(controls)
        with self._lock, self._current():
            for _, stage in self._stages(pose, index):
                stage()
            self._download("i420", out)
        return out

    def stage_times_ms(self, controls: NDArray[Any], index: int) -> dict[str, float]:
        """Device time of each stage of one frame, ms, from CUDA events recorded between them
        (benchmarks/gpu.py; the events cost a little, so `render_i420` records none)."""
        pose, out = self._host.pose(controls), self._output(None)
        with self._lock, self._current():
            stages = [*self._stages(pose, index), ("copy down", lambda: self._download("i420", out))]
            events = [self._new_event() for _ in range(len(stages) + 1)]
            self._cu.cuEventRecord(events[0], self._stream)
            for (_, stage), event in zip(stages, events[1:], strict=True):
                stage()
                self._cu.cuEventRecord(event, self._stream)
            check(self._cu, self._cu.cuEventSynchronize(events[-1]), "time the frame")
            times = {name: float(check(self._cu, self._cu.cuEventElapsedTime(a, b), "time a stage"))
                     for (name, _), a, b in zip(stages, events, events[1:], strict=False)}
            for event in events:
                self._cu.cuEventDestroy(event)
        return times

    def close(self) -> None:
        """Free this renderer's stream and device buffers now (otherwise when it is collected)."""
        self._finalizer()

    def _allocate(self) -> None:
        rig, frame_bytes = self._avatar.rig, self.size * self.size * 3
        h, w = rig.roi.shape
        self._upload("photo", np.ascontiguousarray(self._avatar.image))
        for role in ("moved", "frame"):
            self._buffer(role, frame_bytes)
        self._buffer("i420", frame_bytes // 2)
        for role, array in (("basis", rig.basis), ("rig_u", rig.u), ("rig_v", rig.v),
                            ("upper_edge", rig.upper_edge), ("lower_edge", rig.lower_edge)):
            self._upload(role, np.ascontiguousarray(array, np.float32))
        for k, region in enumerate(self._avatar.eyes.regions):
            self._upload(f"eye{k}", params.eye_planes(region))
        self._buffer("weights", rig.basis.shape[0] * 4)
        self._buffer("coarse", rig.basis.shape[1] * 4)
        self._buffer("coords", h * w * 8)
        for role in ("above", "below", "face_u"):
            self._buffer(role, h * w * 4)
        self._buffer("box", BOX_INTS * 4)
        if self.still:  # the background never changes
            self._copy("moved", "photo", frame_bytes)

    def _output(self, out: NDArray[Any] | None) -> NDArray[Any]:
        shape = (self.size * 3 // 2, self.size)
        if out is None:
            return np.empty(shape, np.uint8)
        if out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a contiguous ({shape[0]}, {shape[1]}) uint8 array")
        return out

    def _stages(self, pose: MouthPose, index: int) -> list[tuple[str, Callable[[], None]]]:
        """One frame's work on the stream, in order, by stage name. The head's pose is read first:
        every later stage folds it into its coordinates."""
        head = None if self.still else self._host.head_pose(index)
        inverse = None if head is None else head.inverse()
        field = params.field_params(self._avatar.rig, pose, inverse)
        return [("head", lambda: self._background(head)),
                ("rig", lambda: self._coarse(pose)),
                ("field + warp", lambda: self._field(field)),
                ("interior", lambda: self._interior(pose, field)),
                ("blink", lambda: self._blink(index, inverse)),
                ("i420", lambda: self._launch("ls_i420", _grid(self.size // 2, self.size // 2),
                                              self._p("frame"), ctypes.c_int32(self.size), self._p("i420")))]

    def _background(self, head: HeadPose | None) -> None:
        """The frame buffer reset to the photo moved by this frame's head pose (None: still);
        the move is re-sampled only when the pose changed."""
        if head is not None and head != self._moved:
            self._launch("ls_head_move", _grid(self.size, self.size), self._p("photo"),
                         ctypes.c_int32(self.size), params.affine_d(head.inverse()), self._p("moved"))
            self._moved = head
        self._copy("frame", "moved", self.size * self.size * 3)

    def _coarse(self, pose: MouthPose) -> None:
        rig = self._avatar.rig
        weights = -np.concatenate([pose.controls, [1.0]]).astype(np.float32)  # negated: backward
        self._upload("weights", weights)
        n_coarse = rig.coarse_shape[0] * rig.coarse_shape[1]
        self._launch("ls_rig_coarse", ((_blocks(n_coarse, POINT_BLOCK), 1), (POINT_BLOCK, 1)),
                     self._p("basis"), self._p("weights"), ctypes.c_int32(len(weights)),
                     ctypes.c_int32(n_coarse), ctypes.c_float(MAX_SHIFT * rig.face_px),
                     self._p("coarse"), self._p("box"))

    def _field(self, field: params.FieldParams) -> None:
        """The field over the mouth region, the photo sampled through it into the frame."""
        self._launch("ls_rig_field", _grid(field.w, field.h), self._p("photo"), ctypes.c_int32(self.size),
                     *(self._p(r) for r in ("coarse", "rig_u", "rig_v", "upper_edge", "lower_edge")),
                     field, *(self._p(r) for r in ("frame", "coords", "above", "below", "face_u", "box")))

    def _interior(self, pose: MouthPose, field: params.FieldParams) -> None:
        mouth = params.mouth_params(self._avatar.mouth, pose, float(pose.controls[LIP_ROUND]))
        self._launch("ls_mouth_interior", _grid(field.w, field.h), self._p("frame"),
                     ctypes.c_int32(self.size), self._p("above"), self._p("below"), self._p("face_u"),
                     field, mouth, self._p("box"))

    def _blink(self, index: int, head: NDArray[Any] | None) -> None:
        amount = self._host.blink_amount(index)
        if amount <= 0.0:
            return
        eyes = self._avatar.eyes
        for k, region in enumerate(eyes.regions):
            blink = params.blink_params(region, eyes.y_axis, amount, head)
            self._launch("ls_blink", _grid(blink.w, blink.h), self._p("photo"), ctypes.c_int32(self.size),
                         self._p(f"eye{k}"), blink, self._p("frame"))

    def _new_event(self) -> Any:
        return check(self._cu, self._cu.cuEventCreate(0), "create an event")

    def _current(self) -> AbstractContextManager[None]:
        return current_context(self._cu, self._context)

    def _buffer(self, role: str, nbytes: int) -> Any:
        pointer = check(self._cu, self._cu.cuMemAlloc(nbytes), f"allocate {nbytes} bytes")
        self._buffers[role] = (pointer, nbytes)
        return pointer

    def _p(self, role: str) -> ctypes.c_uint64:
        """A device buffer's address, as a kernel argument."""
        return ctypes.c_uint64(int(self._buffers[role][0]))

    def _upload(self, role: str, host: NDArray[Any]) -> None:
        held = self._buffers.get(role)
        device = held[0] if held is not None else self._buffer(role, host.nbytes)
        check(self._cu, self._cu.cuMemcpyHtoDAsync(device, host.ctypes.data, host.nbytes, self._stream),
               "copy to the device")

    def _copy(self, target: str, source: str, nbytes: int) -> None:
        check(self._cu, self._cu.cuMemcpyDtoDAsync(self._buffers[target][0], self._buffers[source][0],
                                                     nbytes, self._stream), "copy on the device")

    def _download(self, role: str, out: NDArray[Any]) -> None:
        """The frame's one copy to the host; waits for the stream to finish it."""
        check(self._cu, self._cu.cuMemcpyDtoHAsync(out.ctypes.data, self._buffers[role][0], out.nbytes,
                                                     self._stream), "copy from the device")
        check(self._cu, self._cu.cuStreamSynchronize(self._stream), "render the frame")

    def _launch(self, kernel: str, shape: tuple[tuple[int, int], tuple[int, int]], *args: Arg) -> None:
        # kernelParams: an array of pointers, each to one argument's value (read at launch)
        pointers = (ctypes.c_void_p * len(args))(*(ctypes.addressof(a) for a in args))
        (gx, gy), (bx, by) = shape
        check(self._cu, self._cu.cuLaunchKernel(self._fn[kernel], gx, gy, 1, bx, by, 1, 0, self._stream,
                                                 ctypes.addressof(pointers), 0), f"launch {kernel}")


def _grid(width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(grid, block) covering width x height threads with PIXEL_BLOCK blocks."""
    return (_blocks(width, PIXEL_BLOCK[0]), _blocks(height, PIXEL_BLOCK[1])), PIXEL_BLOCK
