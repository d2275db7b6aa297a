"""Training losses: squared error, plus terms that keep the predicted motion as large as speech's.

Squared error alone regresses to the mean: where the audio leaves a control uncertain, the best
guess is the middle, so the mouth opens less and moves slower than a speaker's (the "mumbling"
look). Two terms push back, each on a whole crop rather than one frame:
- velocity: the frame-to-frame change of each control matches the truth's (transitions as sharp);
- spread: each control's standard deviation over the crop matches the truth's (as wide a range).
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossTerms:
    control: torch.Tensor
    velocity: torch.Tensor
    spread: torch.Tensor


def control_losses(pred: torch.Tensor, truth: torch.Tensor, weights: torch.Tensor) -> LossTerms:
    """pred, truth (B, T, N_CONTROLS); weights (N_CONTROLS,) -> each term, weighted per control."""
    control = ((pred - truth) ** 2 * weights).mean()
    velocity = (((pred.diff(dim=1) - truth.diff(dim=1)) ** 2) * weights).mean()
    spread = (((pred.std(dim=1) - truth.std(dim=1)) ** 2) * weights).mean()
    return LossTerms(control, velocity, spread)
