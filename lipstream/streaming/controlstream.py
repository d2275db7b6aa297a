"""The control stream: one small message per video frame on a data channel the client opens.

A client that draws the face itself (a Live2D/VRM model, a 3D rig, a renderer in the browser), or
that wants to know what the picture shows, opens a data channel labelled `lipstream.controls` in its
offer. For every video frame the session sends, the channel carries, as JSON text:

    {"frame": 125, "pts": 450000, "controls": {"jaw_open": 0.41, "lip_spread": 0.12, ...},
     "visemes": [["aa", 0.62], ["E", 0.21], ["sil", 0.08]], "shown": true}

`frame` is the video frame's index and `pts` its 90 kHz timestamp (`frame * 3600`): the video's RTP
timestamps advance by exactly 3600 per frame, so one frame lined up lines up every frame. Messages
leave when their frame is handed to the video encoder, in order; a frame whose render was late
repeats the last picture and the last controls. A frame whose render was skipped to keep time
carries its own controls, which the repeated picture does not show: `shown` is false then, and
true whenever the picture sent shows this message's controls. `visemes` holds the TOP_VISEMES most probable
Oculus visemes (empty for a model without a viseme head).
"""

import json
import logging

import numpy as np
from aiortc import RTCDataChannel
from prometheus_client import Counter

from lipstream.engine.constants import VIDEO_FPS, VIDEO_PTS_PER_FRAME
from lipstream.engine.controls import CONTROL_NAMES, VISEMES

log = logging.getLogger(__name__)

CONTROL_CHANNEL_LABEL = "lipstream.controls"
TOP_VISEMES = 3
DECIMALS = 3  # controls and probabilities in [0, 1]: a thousandth is below anything visible


def control_message(index: int, controls: np.ndarray, visemes: np.ndarray | None,
                    shown: bool = True) -> str:
    """The JSON text of frame `index`'s message."""
    named = zip(CONTROL_NAMES, controls, strict=True)
    top: list[tuple[str, float]] = []
    if visemes is not None:
        top = [(VISEMES[i], float(visemes[i])) for i in np.argsort(visemes)[::-1][:TOP_VISEMES]]
    return json.dumps({
        "frame": index,
        "pts": index * VIDEO_PTS_PER_FRAME,
        "controls": {name: round(float(value), DECIMALS) for name, value in named},
        "visemes": [[name, round(p, DECIMALS)] for name, p in top],
        "shown": shown,
    }, separators=(",", ":"))


DAY_S = 24 * 3600


def _longest_message_bytes() -> int:
    """A message of a day-long session with every number at its full length (~200 bytes)."""
    every_digit = 0.123  # DECIMALS digits, the longest a rounded number prints
    controls = np.full(len(CONTROL_NAMES), every_digit)
    return len(control_message(DAY_S * VIDEO_FPS, controls, np.full(len(VISEMES), every_digit), False))


LONGEST_MESSAGE_BYTES = _longest_message_bytes()
# What a peer that stopped acknowledging may hold queued in this process: long enough to ride out
# an SCTP retransmission (aiortc waits at least 1 s before resending a lost packet), short enough
# that a peer which never acknowledges costs a few KB, not ~4 KB/s for as long as its session lasts.
BACKLOG_S = 2
MAX_BUFFERED_BYTES = BACKLOG_S * VIDEO_FPS * LONGEST_MESSAGE_BYTES  # 9900 bytes
RESUME_BYTES = MAX_BUFFERED_BYTES // 4  # sending resumes once this little is left: the peer reads


class ControlStream:
    """Sends a peer's frames' controls on its `lipstream.controls` channel, once it is open.

    aiortc holds in this process every message the peer's SCTP has not acknowledged, without
    limit: a peer that stops reading (a stopped process, a hostile client) would make it grow by
    ~4 KB/s for as long as its session lasts. So over MAX_BUFFERED_BYTES queued the stream drops
    messages, and counts them, until the peer has drained the channel to RESUME_BYTES. Each
    message carries the frame's whole state, so a later one supersedes any dropped before it.
    """

    def __init__(self, dropped: Counter | None = None) -> None:
        self.channel: RTCDataChannel | None = None
        self.dropped = dropped  # the server's count of messages not sent (metrics.py)
        self._paused = False  # over the limit: dropping until the channel drains

    def offer(self, channel: RTCDataChannel) -> None:
        """A data channel the peer opened: ours if it carries the label, else ignored."""
        if channel.label == CONTROL_CHANNEL_LABEL:
            channel.bufferedAmountLowThreshold = RESUME_BYTES
            channel.on("bufferedamountlow", self._resume)
            self.channel = channel

    def send(self, index: int, controls: np.ndarray, visemes: np.ndarray | None,
             shown: bool = True) -> None:
        if self.channel is None or self.channel.readyState != "open":
            return
        message = control_message(index, controls, visemes, shown)
        # JSON's ASCII escapes make the text's length its size in bytes
        if self._paused or self.channel.bufferedAmount + len(message) > MAX_BUFFERED_BYTES:
            self._drop()
            return
        try:
            self.channel.send(message)
        except ValueError:  # over the peer's a=max-message-size: it can take none, and the video
            # track that calls this must not stop over it
            log.warning("control stream off: the peer's data channel takes no message this long")
            self.channel = None

    def _drop(self) -> None:
        if not self._paused:
            log.info("control stream paused: the peer has not acknowledged the last %d bytes",
                     MAX_BUFFERED_BYTES)
        self._paused = True
        if self.dropped is not None:
            self.dropped.inc()

    def _resume(self) -> None:
        """The channel drained to RESUME_BYTES (aiortc's `bufferedamountlow`): the peer reads."""
        self._paused = False
