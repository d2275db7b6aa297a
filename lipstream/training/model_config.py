"""MotionNet's dimensions, importable without torch (the CLI reads its defaults)."""

from dataclasses import asdict, dataclass, fields
from typing import Any

CONV_TAPS = 3  # kernel size of each temporal conv: a block's reach grows by (taps - 1) * dilation


@dataclass(frozen=True)
class ModelConfig:
    context_frames: int = 24  # mel frames ending with the video frame's own last hop (240 ms)
    lookahead_frames: int = 4  # mel frames after it (40 ms): the model's share of the latency
    channels: int = 192  # width of the temporal conv stack
    dilations: tuple[int, ...] = (1, 2, 2, 4)  # kernel-3 convs: receptive field 1 + 2 * sum = 19
    head_channels: int = 64  # channels fed to the final window-wide conv
    hidden: int = 256  # width of the MLP before the two heads
    dropout: float = 0.1

    @property
    def window_frames(self) -> int:
        return self.context_frames + self.lookahead_frames

    @property
    def stack_field(self) -> int:
        return 1 + (CONV_TAPS - 1) * sum(self.dilations)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dilations": list(self.dilations)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "dilations" in kwargs:
            kwargs["dilations"] = tuple(kwargs["dilations"])
        return cls(**kwargs)
