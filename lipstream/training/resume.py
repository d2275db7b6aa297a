"""Training state saved at each validation, so that a run stopped part-way resumes where it stopped.

A full run takes ~15 min on a quiet 2-core machine and several times that on a shared one, longer
than a working session may have left. Resumed with the same options, the run rebuilds its pool
from the seed and continues as if never stopped: weights, optimiser moments, the learning-rate
schedule, the crop sampler's random state, torch's (dropout) and the loss history all come back.
"""

import pickle
from pathlib import Path
from typing import Any

from lipstream.errors import ConfigError

STATE_FILE = "resume.pt"
# what save_state writes: its own entries and the state_dict of each part train.py hands it
STATE_KEYS = {"step", "command", "history", "torch_rng", "sampler_rng", "net", "optimizer", "scheduler"}


def save_state(out_dir: Path, step: int, command: str, parts: dict[str, Any],
               history: list[dict[str, float]]) -> None:
    """parts: name -> object with state_dict() (net, optimiser, scheduler); plus the sampler's RNG."""
    import torch

    state = {"step": step, "command": command, "history": history, "torch_rng": torch.get_rng_state(),
             "sampler_rng": parts["sampler"].rng.bit_generator.state,
             **{name: part.state_dict() for name, part in parts.items() if name != "sampler"}}
    partial = out_dir / (STATE_FILE + ".part")
    torch.save(state, partial)
    partial.replace(out_dir / STATE_FILE)  # a run killed while saving keeps the previous state whole


def read_state(out_dir: Path, command: str) -> dict[str, Any]:
    """out_dir's saved state, refused unless it was made by the same options (checked before the
    minutes of corpus synthesis a run starts with)."""
    import torch

    path = out_dir / STATE_FILE
    if not path.is_file():
        raise ConfigError(f"--resume: no saved state in {out_dir} (a run saves one at each validation)")
    try:  # our own file: numpy RNG state is a dict
        state = torch.load(path, weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as exc:
        raise ConfigError(f"--resume: {path} is unreadable ({exc}); run again without --resume") from None
    if not isinstance(state, dict) or not state.keys() >= STATE_KEYS:
        raise ConfigError(f"--resume: {path} is not a lipstream training state; run again without --resume")
    if state["command"] != command:
        raise ConfigError(f"--resume: {out_dir} was trained with other options; run it again with "
                          f"'{state['command']}' or choose another --out")
    return state


def restore(state: dict[str, Any], parts: dict[str, Any]) -> tuple[int, list[dict[str, float]]]:
    """Put a read state back into `parts`; returns (steps done, loss history so far)."""
    import torch

    for name, part in parts.items():
        if name == "sampler":
            part.rng.bit_generator.state = state["sampler_rng"]
        else:
            part.load_state_dict(state[name])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), list(state["history"])
