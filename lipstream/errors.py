"""Domain errors. Each message is one line a user can act on; the CLI prints it and exits 2."""


class LipstreamError(Exception):
    """Base of every error lipstream reports to a user."""


class ConfigError(LipstreamError, ValueError):
    """A setting out of its range (a frame size, a crop scale; the message gives the range), or parts
    put together wrongly (two AsyncEngines around one Engine)."""


class AudioError(LipstreamError):
    """Audio that cannot be read, decoded or used (missing, unreadable, empty)."""


class PhotoError(LipstreamError):
    """A photo that cannot be used: unreadable, too large, no usable face."""


class ModelError(LipstreamError):
    """A motion model file that is missing or does not fit this version."""


class DeviceError(LipstreamError):
    """A microphone or virtual camera that is missing, unsupported or cannot be opened."""


class SpeechEngineError(LipstreamError):
    """A text-to-speech engine for training data that is missing or failed."""


class GpuError(LipstreamError):
    """The CUDA kernels cannot run: no NVIDIA driver or device, no cuda-python, or a CUDA call failed."""


class ServerError(LipstreamError):
    """A lipstream server to measure that cannot be reached, refuses the session or sends no video."""
