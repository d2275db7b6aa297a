"""BatchingMotionModel: many sessions' `predict` calls, gathered for a short window, run as one
`predict_batch` by one thread.

Each session's render thread calls `predict` for its own frame at its own clock phase. The first
call of a batch opens a gather window of `window_ms`; the calls that arrive before it closes (or
until `max_batch` have arrived) go to the wrapped model together, and each caller gets its own
row back. The wait costs each frame up to `window_ms` of latency (docs/gpu.md). An exception
from the batch reaches every caller in it; `close` fails the calls still waiting.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lipstream.engine.constants import VIDEO_FPS
from lipstream.engine.controls import MotionOutput
from lipstream.engine.runners import DEFAULT_MAX_BATCH
from lipstream.errors import ModelError

if TYPE_CHECKING:  # the server imports this module at start-up; the model loads with the first session
    from lipstream.engine.motion import MotionModel

MS_PER_S = 1000.0
FRAME_MS = MS_PER_S / VIDEO_FPS  # 40
# A window as long as a frame would make every frame wait its whole budget: the longest allowed.
MAX_BATCH_WINDOW_MS = FRAME_MS
# On a GPU: sessions' frame phases are spread over FRAME_MS, so a window of FRAME_MS / 8 gathers
# about N / 8 of N sessions per call and costs each frame at most 5 ms of its 40 (docs/gpu.md).
DEFAULT_GPU_BATCH_WINDOW_MS = FRAME_MS / 8
GPU = "cuda"  # device.py's name for it


def default_batch_window_ms(device: str) -> float:
    """On the GPU, batching is the point; on the CPU it gains 1.2-2x per window at best (docs/gpu.md)
    and the wait is latency, so it is off (0) unless `serve --batch-window-ms` asks for it."""
    return DEFAULT_GPU_BATCH_WINDOW_MS if device == GPU else 0.0


@dataclass
class _Call:
    """One caller's window and, once the batch has run, its output or the batch's exception."""

    window: np.ndarray
    arrived_s: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    output: MotionOutput | None = None
    error: BaseException | None = None


class BatchingMotionModel:
    """A MotionModel whose concurrent `predict` calls share one `predict_batch` of `model`."""

    def __init__(self, model: "MotionModel", window_ms: float, max_batch: int = DEFAULT_MAX_BATCH,
                 on_batch: Callable[[int], None] | None = None) -> None:
        if window_ms <= 0 or max_batch < 1:
            raise ValueError("window_ms must be more than 0 and max_batch at least 1")
        self.name = model.name
        self.context_frames = model.context_frames
        self.lookahead_frames = model.lookahead_frames
        self._model = model
        self._window_s = window_ms / MS_PER_S
        self._max_batch = max_batch
        self._on_batch = on_batch or (lambda _size: None)
        self._cond = threading.Condition()
        self._queue: list[_Call] = []
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="motion-batcher", daemon=True)
        self._thread.start()

    def predict(self, window: np.ndarray) -> MotionOutput:
        call = _Call(window)
        with self._cond:
            if self._closed:
                raise ModelError("the motion model is closed (the server is shutting down)")
            self._queue.append(call)
            self._cond.notify_all()
        call.done.wait()  # bounded: the batcher answers within window_ms + one model call, or close()
        if call.error is not None:
            raise call.error
        assert call.output is not None  # set together with done when there was no error
        return call.output

    def predict_batch(self, windows: np.ndarray) -> list[MotionOutput]:
        return self._model.predict_batch(windows)  # already a batch: nothing to gather

    def close(self) -> None:
        """Stop the batcher; calls waiting or arriving later raise ModelError."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _serve(self) -> None:
        while (batch := self._gather()) is not None:
            self._run(batch)

    def _gather(self) -> list[_Call] | None:
        """The next batch: waits for a first call, then for more until window_ms after that call
        arrived (a call that queued during the previous batch has already waited). None: closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._closed)
            if self._queue:
                left_s = self._queue[0].arrived_s + self._window_s - time.monotonic()
                self._cond.wait_for(self._full_or_closed, timeout=max(left_s, 0.0))
            if self._closed:
                self._fail(self._queue, ModelError("the motion model was closed while a frame waited"))
                self._queue = []
                return None
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            return batch

    def _full_or_closed(self) -> bool:
        return len(self._queue) >= self._max_batch or self._closed

    def _run(self, batch: list[_Call]) -> None:
        try:
            outputs = self._model.predict_batch(np.stack([call.window for call in batch]))
            if len(outputs) != len(batch):
                raise ModelError(f"the motion model gave {len(outputs)} outputs for {len(batch)} windows")
            self._on_batch(len(batch))
        except BaseException as exc:  # every caller re-raises it in its own thread
            self._fail(batch, exc)
            return
        for call, output in zip(batch, outputs, strict=True):
            call.output = output
            call.done.set()

    @staticmethod
    def _fail(calls: list[_Call], error: BaseException) -> None:
        for call in calls:
            call.error = error
            call.done.set()
