"""Warp and composite behind one signature, one implementation per device.

The per-frame pixel work of the renderer is exactly two operations on a region of the frame:

- `warp_region(src, coords, out)`: out[y, x] = src sampled at coords[y, x] = (sx, sy), bilinear,
  coordinates clamped to the image (edge replication). src (H, W, 3) uint8; coords (h, w, 2)
  float32 absolute source pixels; out (h, w, 3) uint8, usually a view of the frame's region.
- `composite(out, colour, alpha)`: out = round(out * (1 - alpha) + colour * alpha), in place.
  colour (h, w, 3) float32 in 0..255, alpha (h, w) float32 in [0, 1].

`reference.py` spells the per-pixel math in plain numpy; tests compare every device against it.
`cuda.py` runs `warp.cu` (its per-pixel math in `warp.cuh`, which also builds for the CPU) on an
NVIDIA GPU; it needs `pip install lipstream[gpu]` and raises `GpuError` where there is no GPU.

The whole frame on the GPU (head move, rig field, warp, mouth interior, blink, RGB -> I420) is
`device_render.DeviceRenderer`, running `render.cu` (its per-pixel math in `sample.cuh`, `rig.cuh`
and `face.cuh`, which also build for the CPU; `params.py` fills their parameter structs).
"""

from typing import Any, Protocol

from numpy.typing import NDArray

KERNEL_DEVICES = ("cpu", "reference", "cuda")  # what get_kernels takes


class Kernels(Protocol):
    name: str

    def warp_region(self, src: NDArray[Any], coords: NDArray[Any], out: NDArray[Any]) -> None: ...

    def composite(self, out: NDArray[Any], colour: NDArray[Any], alpha: NDArray[Any]) -> None: ...


def get_kernels(device: str = "cpu") -> Kernels:
    """The implementation for a device: "cpu", "reference" or "cuda" (an NVIDIA GPU)."""
    if device == "cpu":
        from lipstream.kernels.cpu import CpuKernels

        return CpuKernels()
    if device == "reference":
        from lipstream.kernels.reference import ReferenceKernels

        return ReferenceKernels()
    if device == "cuda":
        from lipstream.kernels.cuda import CudaKernels

        return CudaKernels()
    raise ValueError(f"no kernels for device {device!r}: use one of {', '.join(KERNEL_DEVICES)}")
