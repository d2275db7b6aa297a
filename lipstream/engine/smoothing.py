"""Per-control easing: muscles open and close at different speeds.

A one-pole filter per control, with its own attack (rising) and release (falling) time, so a
closure is reached quickly, the jaw relaxes smoothly in silence, and no frame jumps.
"""

from dataclasses import dataclass

import numpy as np

from lipstream.engine.constants import VIDEO_FPS
from lipstream.engine.controls import CONTROL_NAMES, N_CONTROLS
from lipstream.engine.ranges import each_problem, refuse


@dataclass(frozen=True)
class SmoothingConfig:
    # time constants in ms, per control in CONTROL_NAMES order
    attack_ms: tuple[float, ...] = (25.0, 40.0, 50.0, 15.0, 30.0)
    release_ms: tuple[float, ...] = (60.0, 70.0, 80.0, 35.0, 50.0)

    def __post_init__(self) -> None:
        """A NaN time constant made every control NaN from then on; a negative one passed as 0."""
        use = f"{N_CONTROLS} times in ms from 0, one per control ({', '.join(CONTROL_NAMES)})"
        refuse([each_problem(getattr(self, name), N_CONTROLS, 0.0, f"SmoothingConfig {name}",
                             f"{use}, e.g. {getattr(SmoothingConfig, name)}")
                for name in ("attack_ms", "release_ms")])


def _alpha(tau_ms: np.ndarray) -> np.ndarray:
    frame_ms = 1000.0 / VIDEO_FPS
    alpha: np.ndarray = 1.0 - np.exp(-frame_ms / np.maximum(tau_ms, 1e-3))
    return alpha.astype(np.float32)


class ControlSmoother:
    def __init__(self, config: SmoothingConfig = SmoothingConfig()) -> None:
        self._attack = _alpha(np.asarray(config.attack_ms))
        self._release = _alpha(np.asarray(config.release_ms))
        self.state = np.zeros(N_CONTROLS, np.float32)

    def step(self, target: np.ndarray) -> np.ndarray:
        target = np.clip(target, 0.0, 1.0).astype(np.float32)
        alpha = np.where(target > self.state, self._attack, self._release)
        self.state = (self.state + alpha * (target - self.state)).astype(np.float32)
        return self.state.copy()
