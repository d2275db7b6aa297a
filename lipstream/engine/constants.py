"""Units of the pipeline. Every other number is derived from these."""


def exact_div(x: int, y: int) -> int:
    assert x % y == 0, f"{x} is not a multiple of {y}"
    return x // y


SAMPLE_RATE = 16_000  # Hz, the engine's audio rate
VIDEO_FPS = 25
SAMPLES_PER_VIDEO_FRAME = exact_div(SAMPLE_RATE, VIDEO_FPS)  # 640 at 16 kHz, 25 fps

HOP_MS = 10
HOP_SAMPLES = exact_div(SAMPLE_RATE * HOP_MS, 1000)  # 160: one mel frame per 10 ms
N_FFT = 400  # 25 ms analysis window
N_MELS = 80
MEL_FRAMES_PER_VIDEO_FRAME = exact_div(SAMPLES_PER_VIDEO_FRAME, HOP_SAMPLES)  # 4
MEL_FRAMES_PER_SECOND = exact_div(SAMPLE_RATE, HOP_SAMPLES)  # 100

VIDEO_CLOCK_RATE = 90_000  # Hz, RTP video clock
VIDEO_PTS_PER_FRAME = exact_div(VIDEO_CLOCK_RATE, VIDEO_FPS)  # 3600

# A frame's side: I420 and H.264 halve both sides for chroma, so it is even
MIN_SIZE_PX = 64  # smaller, and the mouth is a handful of pixels
MAX_SIZE_PX = 2048  # a 12 MB RGB frame, already beyond the detail of most face photos


def size_problem(size_px: int, name: str = "--size") -> str | None:
    """Why `size_px` cannot be a frame's side (None: it can), said of the option or field `name`."""
    if size_px % 2 or not MIN_SIZE_PX <= size_px <= MAX_SIZE_PX:
        return f"{name} {size_px}: use an even number of pixels from {MIN_SIZE_PX} to {MAX_SIZE_PX}"
    return None
