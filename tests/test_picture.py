"""A frame's I420 is its picture's, byte for byte, however it was made.

The CPU renderer says what each frame changed on its moved photo, and a frame's I420 is another
converted frame's on the same photo with only the changed regions converted again (issue 9: the
producer converted every whole frame). Checked against converting the whole frame, with head
motion, blinks and speech, read in order (as the producer does) and in any order.
"""

import cv2
import numpy as np
import pytest

from lipstream.engine.avatar import Avatar
from lipstream.engine.engine import Picture
from lipstream.engine.render import RenderConfig, Renderer
from tests.test_render_reference import speech_controls

FRAMES = 120  # at seed 0: blinks and head-pose steps


@pytest.mark.parametrize("order", ["drawn", "shuffled"])
def test_i420_from_the_changed_regions_is_the_whole_frames(avatar: Avatar, order: str) -> None:
    renderer = Renderer(avatar, RenderConfig(), seed=0)
    pictures = []
    for index, controls in enumerate(speech_controls(FRAMES)):
        image = renderer.render(controls, index)
        pictures.append((image, Picture(image, i420=False, changes=renderer.changes)))
    blinks = sum(renderer.blink_amount(i) > 0 for i in range(FRAMES))
    poses = len({renderer.head_pose(i) for i in range(FRAMES)})
    assert blinks > 0 and poses > 1, "the frames must hold blinks and head motion"
    reads = range(FRAMES) if order == "drawn" else np.random.default_rng(5).permutation(FRAMES)
    for index in reads:
        image, picture = pictures[index]
        np.testing.assert_array_equal(picture.yuv, cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420))


def test_a_picture_is_read_only_in_both_forms(avatar: Avatar) -> None:
    renderer = Renderer(avatar, RenderConfig(), seed=0)
    image = renderer.render(np.zeros(5, np.float32), 0)
    picture = Picture(image, i420=False, changes=renderer.changes)
    assert not picture.rgb.flags.writeable and not picture.yuv.flags.writeable
