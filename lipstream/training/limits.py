"""How large a training step this machine can hold, said before the corpus synthesis.

`--batch-size` and `--channels` have no natural ceiling, and a step too large for the memory
fails only after the minutes of synthesis a run starts with. The memory a step needs grows with
the batch (activations) and with the square of the channels (weights and optimiser state); it is
estimated here from the model's dimensions and held against the machine's physical memory.
"""

import math
import os

from lipstream.errors import ConfigError
from lipstream.training.model_config import CONV_TAPS, ModelConfig

FLOAT_BYTES = 4  # float32 weights, activations and optimiser state
# Weights, their gradients and AdamW's two moments: four float32 copies per parameter.
COPIES_PER_PARAMETER = 4
# (channels, crop frames) float32 tensors one step holds per layer and batch item: saved for
# the backward pass and its gradients. Measured 7.0-7.4 (torch 2.13 CPU, default model, batch
# 64 and 128, peak RSS over two steps); rounded up.
TENSORS_PER_LAYER = 8
MEMORY_SHARE = 0.5  # of physical memory: the corpus pool, the interpreter and torch need the rest
GB = 1e9


def memory_budget_bytes() -> float:
    """The share of this machine's physical memory one training step may use."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * MEMORY_SHARE


def weights_bytes(model: ModelConfig) -> float:
    """Weights and optimiser state of the conv stack, which dominate at any width that matters."""
    parameters = len(model.dilations) * CONV_TAPS * model.channels**2
    return parameters * COPIES_PER_PARAMETER * FLOAT_BYTES


def item_bytes(model: ModelConfig, crop_frames: int) -> float:
    """Activations one batch item holds through a step: the input layer and each conv block."""
    layers = 1 + len(model.dilations)
    return layers * TENSORS_PER_LAYER * model.channels * crop_frames * FLOAT_BYTES


def check_step_memory(model: ModelConfig, batch_size: int, crop_frames: int,
                      budget_bytes: float | None = None) -> None:
    """Refuse a batch or a width whose training step would not fit in memory, naming the most
    this machine takes."""
    budget = memory_budget_bytes() if budget_bytes is None else budget_bytes
    per_item = item_bytes(model, crop_frames)
    need = weights_bytes(model) + batch_size * per_item
    if need <= budget:
        return
    said = (f"one training step needs ~{need / GB:,.1f} GB, over the {budget / GB:,.1f} GB "
            f"({MEMORY_SHARE:.0%} of this machine's memory) it may use")
    if weights_bytes(model) + per_item <= budget:  # the width fits: the batch is what is too large
        largest = int((budget - weights_bytes(model)) // per_item)
        raise ConfigError(f"--batch-size {batch_size}: {said}: use at most {largest} "
                          f"at --channels {model.channels}")
    batch = batch_size if most_channels(model, batch_size, crop_frames, budget) >= 1 else 1
    raise ConfigError(f"--channels {model.channels}: {said}: use at most "
                      f"{most_channels(model, batch, crop_frames, budget)} at --batch-size {batch}")


def most_channels(model: ModelConfig, batch_size: int, crop_frames: int, budget_bytes: float) -> int:
    """The widest conv stack whose step fits: the positive root of a C^2 + b C = budget."""
    a = len(model.dilations) * CONV_TAPS * COPIES_PER_PARAMETER * FLOAT_BYTES
    b = batch_size * (1 + len(model.dilations)) * TENSORS_PER_LAYER * crop_frames * FLOAT_BYTES
    return int((-b + math.sqrt(b * b + 4 * a * budget_bytes)) / (2 * a))
