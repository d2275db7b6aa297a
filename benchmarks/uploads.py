"""What a 49 MP JPEG upload costs the server: time and peak RSS, full decode vs draft decode, and
RSS left over after three uploads with and without handing freed heap back (malloc_trim).

Each case runs in a fresh process, so peak RSS is that case's own (the kernel's ru_maxrss).

    python benchmarks/uploads.py [--megapixels 49] [--json benchmarks/results/uploads.json]
"""

import argparse
import io
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

UPLOADS_KEPT = 3  # the observation: three uploads left RSS ~650 MB higher
CASES = ("full-decode", "draft-decode", "3-uploads-no-trim", "3-uploads-trim")


def make_photo(path: Path, megapixels: float) -> None:
    """The astronaut scaled up to `megapixels`, her face 1/4 of the side, with sensor-like noise
    (a smooth upscale would compress, and so decode, unrealistically fast)."""
    import cv2
    from PIL import Image
    from skimage import data

    side = int((megapixels * 1e6) ** 0.5)
    photo = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(0).integers(-6, 7, photo.shape, dtype=np.int16)
    noisy = np.clip(photo.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(noisy).save(out, format="JPEG", quality=90)
    path.write_bytes(out.getvalue())


def status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since exec: getrusage's maxrss of a child would include the
    forking parent's own peak) of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(case: str, photo: Path) -> dict[str, float]:
    """One case in this process: seconds per upload and RSS after, as the upload thread runs them."""
    from lipstream.engine.avatar import Avatar, AvatarConfig, analyse
    from lipstream.engine.photo import decode_photo
    from lipstream.streaming import avatars

    data = photo.read_bytes()
    Avatar.default()  # FaceMesh and the default avatar loaded, as in a running server
    base_mb = status_mb("VmRSS")
    config = AvatarConfig()
    if case == "full-decode":
        def upload() -> None:
            analyse(decode_photo(data, "p", config.max_megapixels), "p", config)
    else:
        def upload() -> None:
            avatars.analyse_photo(data)
        if case == "3-uploads-no-trim":
            avatars.release_free_memory = lambda: None  # type: ignore[assignment]
    uploads = 1 if case in ("full-decode", "draft-decode") else UPLOADS_KEPT
    seconds: list[float] = []

    def run() -> None:  # in a thread of its own, as the server's upload pool does
        for _ in range(uploads):
            start = time.perf_counter()
            upload()
            seconds.append(time.perf_counter() - start)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    return {"seconds_per_upload": float(np.median(seconds)), "idle_rss_mb": base_mb,
            "peak_rss_mb": status_mb("VmHWM"), "rss_after_mb": status_mb("VmRSS") - base_mb}


def measure(case: str, photo: Path) -> dict[str, float]:
    result = subprocess.run([sys.executable, __file__, "--child", case, str(photo)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{case} failed: {result.stderr[-2000:]}")
    row: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=49.0)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/uploads.json"))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    with tempfile.TemporaryDirectory() as folder:
        photo = Path(folder) / "photo.jpg"
        make_photo(photo, args.megapixels)
        rows = {case: measure(case, photo) for case in CASES}
    print(f"{args.megapixels:g} MP JPEG         s/upload  idle RSS MB  peak RSS MB  RSS left after (MB)")
    for case, row in rows.items():
        print(f"{case:20} {row['seconds_per_upload']:9.2f} {row['idle_rss_mb']:12.0f} "
              f"{row['peak_rss_mb']:12.0f} {row['rss_after_mb']:12.0f}")
    args.json.write_text(json.dumps({"megapixels": args.megapixels, "cases": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
