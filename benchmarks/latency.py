"""Speech onset -> mouth opens, and a new session's first frame, measured from outside the server.

    python benchmarks/latency.py --spawn                       # spawns `lipstream serve` on loopback
    python benchmarks/latency.py --url http://127.0.0.1:8080   # a running server (default avatar)

The same measurement as `lipstream bench --latency URL|--spawn` (lipstream/measure/latency.py):
prints a table and writes benchmarks/results/latency.json and .png.
"""

import argparse
from dataclasses import replace
from pathlib import Path

from lipstream.measure.latency import LatencyConfig
from lipstream.measure.report import run_latency


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running lipstream serve")
    where.add_argument("--spawn", action="store_true", help="start lipstream serve on a free loopback port")
    parser.add_argument("--onsets", type=int, help="speech bursts to send (default: LatencyConfig's)")
    parser.add_argument("--inject-delay-ms", type=float, default=0.0,
                        help="self-check: start every other burst this much after its stamped onset "
                             "(whole frames, e.g. 120)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latency"),
                        help="writes OUT.json and OUT.png")
    args = parser.parse_args()
    config = replace(LatencyConfig(), inject_delay_s=args.inject_delay_ms / 1000)
    config = config if args.onsets is None else replace(config, onsets=args.onsets)
    run_latency(None if args.spawn else args.url, config, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
