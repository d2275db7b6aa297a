"""EngineGroup: many sessions' engines, one motion model, one runner call per frame tick.

Each engine's `pop_frame` is `next_window` -> model -> `complete`. A group takes the windows of
every engine that has a frame due, stacks them into one (B, T, N_MELS) batch for
`predict_batch`, and hands each engine back its own row. On a GPU that turns N small launches
into one; onnxruntime on the CPU gains too (benchmarks/stages.py measures batch 1/8/32). The
frames are exactly those each engine would make alone (tests/test_batch.py).

Threads: like an Engine's, a group's calls are serialised by its caller.
"""

from collections.abc import Sequence

import numpy as np

from lipstream.engine.engine import Engine, Frame
from lipstream.engine.motion import MotionModel
from lipstream.engine.runners import DEFAULT_MAX_BATCH


class EngineGroup:
    def __init__(self, model: MotionModel, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.model = model
        self.max_batch = max_batch  # windows per runner call: the runner's own limit
        self.engines: list[Engine] = []

    def add(self, engine: Engine) -> None:
        """Join the group; the engine must run this group's model (build it with `model=`)."""
        if engine.model is not self.model:
            raise ValueError("an engine joins a group only with the group's model: "
                             "build it as Engine(avatar, config, model=group.model)")
        self.engines.append(engine)

    def remove(self, engine: Engine) -> None:
        self.engines.remove(engine)

    def step(self, render: bool = True) -> list[Frame | None]:
        """One frame from every engine whose audio is in (None for the others), in `engines` order."""
        due = [(i, window) for i, engine in enumerate(self.engines)
               if (window := engine.next_window()) is not None]
        frames: list[Frame | None] = [None] * len(self.engines)
        for batch in _chunks(due, self.max_batch):
            outputs = self.model.predict_batch(np.stack([window for _, window in batch]))
            for (i, _), output in zip(batch, outputs, strict=True):
                frames[i] = self.engines[i].complete(output, render)
        return frames


def _chunks(items: Sequence[tuple[int, np.ndarray]], size: int) -> list[Sequence[tuple[int, np.ndarray]]]:
    return [items[start : start + size] for start in range(0, len(items), size)]
