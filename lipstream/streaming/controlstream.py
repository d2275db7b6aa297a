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

from lipstream.engine.constants import VIDEO_PTS_PER_FRAME
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


class ControlStream:
    """Sends a peer's frames' controls on its `lipstream.controls` channel, once it is open."""

    def __init__(self) -> None:
        self.channel: RTCDataChannel | None = None

    def offer(self, channel: RTCDataChannel) -> None:
        """A data channel the peer opened: ours if it carries the label, else ignored."""
        if channel.label == CONTROL_CHANNEL_LABEL:
            self.channel = channel

    def send(self, index: int, controls: np.ndarray, visemes: np.ndarray | None,
             shown: bool = True) -> None:
        if self.channel is None or self.channel.readyState != "open":
            return
        try:
            self.channel.send(control_message(index, controls, visemes, shown))
        except ValueError:  # over the peer's a=max-message-size: it can take none, and the video
            # track that calls this must not stop over it
            log.warning("control stream off: the peer's data channel takes no message this long")
            self.channel = None
