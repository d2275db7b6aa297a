"""The rate a server's video sender encodes at: a ceiling for a face, and a hold on the receiver's
estimate so that its wobbles do not rebuild the encoder.

aiortc sets a sender's rate from the receiver's estimate (REMB), up to 1.5 Mbit/s, and builds a new
encoder, which starts with a keyframe, whenever the rate moves by over 10% (`codecs.py` makes
aiortc's VP8 and H.264 senders take `HeldRate.target` instead of the estimate). Figures in
`docs/profile.md` sections 11 and 14.

- The ceiling: a rendered face stops looking better well below 1.5 Mbit/s (`MAX_BITS_PER_PIXEL`),
  so a sender takes the estimate only below the ceiling; congestion still lowers it.
- The hold (`RateHold`): below the ceiling each wobble of the estimate still rebuilt the encoder
  (measured: ~15 a minute with aiortc receivers; `benchmarks/rebuilds.py`). The receiver's
  estimator cuts to 0.85 of the arriving rate on each overuse it sees and climbs back 8% a second,
  so: a fall as deep as two cuts in a row (27.75%) is congestion and is followed at once; a
  shallower fall only once the estimate has stayed below the rate for 4.2 s (twice the 2.1 s one
  cut takes to climb back); a rise at most once per 4.2 s since the last move. A new picture size
  takes the estimate at once (the encoder is rebuilt for it anyway).
"""

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from aiortc.codecs.vpx import MAX_BITRATE as VP8_MAX_BITRATE
from aiortc.codecs.vpx import MIN_BITRATE as VP8_MIN_BITRATE

from lipstream.engine.constants import VIDEO_FPS

log = logging.getLogger(__name__)

# The most a 512 px talking face needs at 25 fps; more is not seen (benchmarks/vp8.py, table
# "bitrate": docs/profile.md section 10). Other sizes get the same bits per pixel.
CEILING_SIDE_PX = 512
CEILING_BPS_AT_SIDE = 800_000
MAX_BITS_PER_PIXEL = CEILING_BPS_AT_SIDE / (CEILING_SIDE_PX**2 * VIDEO_FPS)
PIXELS_BEFORE_FIRST_FRAME = CEILING_SIDE_PX**2  # the ceiling before an encoder has seen a frame


def bitrate_ceiling(pixels: int, bits_per_pixel: float = MAX_BITS_PER_PIXEL) -> int:
    """The most a sender encodes `pixels`-pixel frames at, within aiortc's VP8 range."""
    return max(VP8_MIN_BITRATE, min(round(bits_per_pixel * pixels * VIDEO_FPS), VP8_MAX_BITRATE))


# aiortc's receiver-side estimate (aiortc/rate.py, as Chromium's) cuts to 0.85 of the rate that
# arrived on each overuse it detects, then climbs back by 8% a second.
ESTIMATE_BACKOFF = 0.85
ESTIMATE_CLIMB_PER_S = 1.08
# One backoff is a wobble; a fall as deep as two in a row (27.75%) is congestion.
FALL_AT_ONCE = 1 - ESTIMATE_BACKOFF**2
# A single backoff climbs back within log(1/0.85)/log(1.08) = 2.1 s; a smaller fall is held twice that.
BACKOFF_RECOVERY_S = math.log(1 / ESTIMATE_BACKOFF) / math.log(ESTIMATE_CLIMB_PER_S)
HOLD_S = 2 * BACKOFF_RECOVERY_S  # 4.2 s


@dataclass(frozen=True)
class RateHold:
    """When a sender follows the receiver's estimate (module docstring: "the hold").
    All zero: every move at once, as aiortc does."""

    fall_at_once: float = FALL_AT_ONCE  # a fall of this fraction of the rate or more: at once
    hold_s: float = HOLD_S  # a smaller fall: once the estimate stayed below the rate this long
    rise_interval_s: float = HOLD_S  # a rise: at most once per this, since the last move


FOLLOW_EVERY_MOVE = RateHold(fall_at_once=0.0, hold_s=0.0, rise_interval_s=0.0)


class HeldRate:
    """The rate a receiver asked for, held under the ceiling for the frames being sent, and moved
    only as `RateHold` says (each move of over 10% makes aiortc build a new encoder)."""

    def __init__(self, asked: int, hold: RateHold, now: Callable[[], float]) -> None:
        self.asked, self.pixels, self.hold, self.now = asked, PIXELS_BEFORE_FIRST_FRAME, hold, now
        self.sending = asked
        self.moved_at = self.below_since = -math.inf  # the first estimate is taken at once

    def wanted(self, bits_per_pixel: float) -> int:
        return max(VP8_MIN_BITRATE, min(self.asked, bitrate_ceiling(self.pixels, bits_per_pixel)))

    def target(self, bits_per_pixel: float) -> int:
        ceiling = bitrate_ceiling(self.pixels, bits_per_pixel)  # a held rate never exceeds it
        return max(VP8_MIN_BITRATE, min(self.sending, ceiling))

    def resize(self, pixels: int, bits_per_pixel: float) -> None:
        """Frames of `pixels` from now on: a new size rebuilds the encoder anyway, so the rate
        moves to the estimate at once (not counted as a move of the estimate)."""
        if pixels != self.pixels:
            self.pixels, self.sending = pixels, self.wanted(bits_per_pixel)

    def _follows(self, wanted: int, sending: int) -> bool:
        now = self.now()
        if wanted >= sending:  # at or above the rate: no fall is pending
            self.below_since = -math.inf
            return wanted > sending and now - self.moved_at >= self.hold.rise_interval_s
        if self.below_since == -math.inf:
            self.below_since = now
        deep = wanted <= round(sending * (1 - self.hold.fall_at_once))  # in whole bit/s
        return deep or now - self.below_since >= self.hold.hold_s

    def ask(self, bitrate: int, bits_per_pixel: float) -> int:
        """Take a receiver's estimate; the rate to send at (said in the debug log when it moves:
        `lipstream -v serve` shows what each sender really encodes at)."""
        before, self.asked = self.target(bits_per_pixel), bitrate
        wanted = self.wanted(bits_per_pixel)
        if self._follows(wanted, before):
            self.sending, self.moved_at, self.below_since = wanted, self.now(), -math.inf
        after = self.target(bits_per_pixel)
        if after != before:
            log.debug("video sender at %d bit/s (receiver's estimate %d, ceiling %d)", after, bitrate,
                      bitrate_ceiling(self.pixels, bits_per_pixel))
        return after
