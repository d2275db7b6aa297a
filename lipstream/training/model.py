"""MotionNet: a mel window -> mouth controls and viseme logits.

The network is fully convolutional in time with "valid" convolutions whose receptive field is
exactly `context_frames + lookahead_frames` mel frames. Run on one window it yields one output
(what the engine asks for, per video frame); run on a whole utterance it yields the output of
every window at once, which is how it trains: one pass over a 3 s clip gives ~270 targets for
the cost of ~10 window evaluations.

Output j of a sequence belongs to the window of input frames [j, j + receptive_field), whose
"own" frame (the video frame's last hop) is input frame j + context_frames - 1.
"""

import torch
from torch import nn

from lipstream.engine.constants import N_MELS
from lipstream.engine.controls import N_CONTROLS, N_VISEMES
from lipstream.training.model_config import CONV_TAPS, ModelConfig

__all__ = ["ModelConfig", "MotionNet", "WindowMotionNet", "count_parameters"]


class _ConvBlock(nn.Module):
    """Residual kernel-3 valid conv: the residual is cropped to the shorter output."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, CONV_TAPS, dilation=dilation)
        self.norm = nn.BatchNorm1d(channels)
        self.act = nn.GELU()
        self.crop = (CONV_TAPS - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T) -> (B, C, T - crop)
        return x[:, :, self.crop :] + self.act(self.norm(self.conv(x)))


class MotionNet(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.window_frames < config.stack_field:
            raise ValueError(f"window of {config.window_frames} frames is shorter than the conv stack's "
                             f"receptive field ({config.stack_field})")
        self.config = config
        # Fixed per-bin statistics of the training corpus, set once before training.
        self.register_buffer("mel_mean", torch.zeros(N_MELS))
        self.register_buffer("mel_std", torch.ones(N_MELS))
        self.inp = nn.Conv1d(N_MELS, config.channels, 1)
        self.blocks = nn.Sequential(*(_ConvBlock(config.channels, d) for d in config.dilations))
        self.squeeze = nn.Conv1d(config.channels, config.head_channels, 1)
        # One conv spanning the rest of the window: position-aware, like a flatten + linear.
        span = config.window_frames - config.stack_field + 1
        self.span = nn.Conv1d(config.head_channels, config.hidden, span)
        hidden, p = config.hidden, config.dropout
        self.mlp = nn.Sequential(nn.GELU(), nn.Dropout(p), nn.Conv1d(hidden, hidden, 1),
                                 nn.GELU(), nn.Dropout(p))
        self.controls = nn.Conv1d(config.hidden, N_CONTROLS, 1)
        self.visemes = nn.Conv1d(config.hidden, N_VISEMES, 1)

    def set_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mel_mean.copy_(mean)
        self.mel_std.copy_(torch.clamp(std, min=1e-3))

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mel (B, T, N_MELS) log10 power, T >= window_frames -> controls (B, T', N_CONTROLS) in
        [0, 1] and viseme logits (B, T', N_VISEMES), T' = T - window_frames + 1."""
        x = ((mel - self.mel_mean) / self.mel_std).transpose(1, 2)  # (B, N_MELS, T)
        x = self.blocks(self.inp(x))
        x = self.mlp(self.span(torch.nn.functional.gelu(self.squeeze(x))))
        controls = torch.sigmoid(self.controls(x)).transpose(1, 2)
        return controls, self.visemes(x).transpose(1, 2)


class WindowMotionNet(nn.Module):
    """The exported form: one window per batch item -> controls (B, 5), viseme probabilities (B, 15)."""

    def __init__(self, net: MotionNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        controls, logits = self.net(mel)
        return controls[:, -1], torch.softmax(logits[:, -1], dim=-1)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
