"""Where an engine runs: `--device auto|cpu|cuda`, resolved once per process into a `DeviceChoice`.

"cpu" never touches anything GPU-related (no cuda-python, no TensorRT import), so the package runs
without the `gpu` extra. "auto" probes for a usable NVIDIA GPU through cuda-python and, when one is
there, picks the best model runner that imports: TensorRT, else onnxruntime's CUDA provider, else
the CPU model (in every GPU case the engine draws whole frames there: `device_renderer`). "cuda"
is "auto" that refuses to fall back. Each resolution logs one line
saying what was chosen and why.
"""

import argparse
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lipstream.errors import GpuError

if TYPE_CHECKING:  # the CPU path imports nothing GPU-related, not even for types
    from lipstream.engine.avatar import Avatar
    from lipstream.engine.render import RenderConfig
    from lipstream.kernels.device_render import DeviceRenderer

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
CLI_DEVICE = "auto"  # what the commands ask for unless told: a GPU when one is usable

# Model runners, by name (`runners.make_runner` builds them).
ONNX_CPU = "onnxruntime"
ONNX_CUDA = "onnxruntime-cuda"
TENSORRT = "tensorrt"


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cpu" or "cuda"
    runner: str  # ONNX_CPU, ONNX_CUDA or TENSORRT: who runs the motion model
    kernels: str  # "cpu" or "cuda": who warps and composites
    reason: str  # one phrase: why this choice

    def describe(self) -> str:
        return f"device {self.device}: {self.runner} motion model, {self.kernels} kernels ({self.reason})"


CPU_CHOICE = DeviceChoice("cpu", ONNX_CPU, "cpu", "asked for the CPU")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """`--device`, the same on every command."""
    parser.add_argument("--device", choices=DEVICES, default=CLI_DEVICE,
                        help="where the engine runs: 'auto' (an NVIDIA GPU when one is usable, else the "
                        f"CPU), 'cpu' or 'cuda' (fail without a GPU); default {CLI_DEVICE}")


@functools.cache
def resolve_device(requested: str) -> DeviceChoice:
    """The device for `requested` ("auto", "cpu" or "cuda"), said in one log line the first time;
    GpuError for "cuda" without a GPU."""
    choice = choose_device(requested)
    log.info("lipstream %s", choice.describe())
    return choice


@functools.cache
def choose_device(requested: str) -> DeviceChoice:
    """`resolve_device` without the log line: a command checks `--device` with it before its other
    checks, whose errors must stay the only line it prints."""
    if requested not in DEVICES:
        raise GpuError(f"unknown device {requested!r}: use one of {', '.join(DEVICES)}")
    return CPU_CHOICE if requested == "cpu" else _probe(requested)


def _probe(requested: str) -> DeviceChoice:
    try:
        gpu = find_gpu()
    except GpuError as err:
        if requested == "cuda":
            raise GpuError(f"--device cuda: {err}; or run with --device cpu") from err
        return DeviceChoice("cpu", ONNX_CPU, "cpu", f"no usable NVIDIA GPU: {err}")
    runner, why = gpu_runner()
    return DeviceChoice("cuda", runner, "cuda", f"{gpu} found by cuda-python; {why}")


def find_gpu(device_index: int = 0) -> str:
    """The name of CUDA device `device_index`; GpuError saying what is missing when there is none."""
    from lipstream.kernels.build import bindings
    from lipstream.kernels.driver import device_name, open_device

    cu, _ = bindings()
    device, _context = open_device(cu, device_index)
    return device_name(cu, device)


def device_renderer(choice: DeviceChoice, avatar: "Avatar", config: "RenderConfig",
                    seed: int) -> "DeviceRenderer | None":
    """The whole-frame GPU renderer (I420 out, one copy per frame) when `choice` is the GPU; None
    on the CPU, where `engine.render.Renderer` makes RGB frames and the caller converts them."""
    if choice.kernels != "cuda":
        return None
    from lipstream.kernels.device_render import DeviceRenderer

    return DeviceRenderer(avatar, config, seed)


def gpu_runner() -> tuple[str, str]:
    """(runner, why) for a machine with a GPU: the fastest runtime that is installed and imports."""
    problem = _tensorrt_problem()
    if problem is None:
        return TENSORRT, "TensorRT imports"
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return ONNX_CUDA, f"{problem}; onnxruntime has its CUDA provider"
    return ONNX_CPU, f"{problem} and onnxruntime-gpu is not installed: the model runs on the CPU"


def _tensorrt_problem() -> str | None:
    """None when TensorRT imports; else why not. Installed is not enough: a wheel built for
    another CUDA, or a library missing, fails only on import, and then the next runner is chosen."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # ImportError, or OSError from a shared library that does not load
        return f"TensorRT does not import ({exc})"
    return None
