"""Speech onset -> mouth opens, and a new session's first frame, measured from outside the server.

    python benchmarks/latency.py --spawn                       # spawns `lipstream serve` on loopback
    python benchmarks/latency.py --url http://127.0.0.1:8080   # a running server (default avatar)
    python benchmarks/latency.py --spawn --browser             # as headless Chromium presents it

The same measurement as `lipstream bench --latency URL|--spawn` (lipstream/measure/latency.py):
prints a table and writes benchmarks/results/latency.json and .png. With --browser, Chromium's
viewer page watches the session with and without its playout-delay hint
(lipstream/measure/browser_latency.py): benchmarks/results/latency-chromium.json.
"""

import argparse
from dataclasses import replace
from pathlib import Path

from lipstream.measure.latency import LatencyConfig
from lipstream.measure.server import base_url

RESULTS = Path("benchmarks/results")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running lipstream serve")
    where.add_argument("--spawn", action="store_true", help="start lipstream serve on a free loopback port")
    parser.add_argument("--browser", action="store_true",
                        help="measure what headless Chromium presents (viewer page, with and without "
                             "the playout-delay hint) instead of an aiortc client")
    parser.add_argument("--onsets", type=int, help="speech bursts to send (default: LatencyConfig's)")
    parser.add_argument("--inject-delay-ms", type=float, default=0.0,
                        help="self-check: start every other burst this much after its stamped onset "
                             "(whole frames, e.g. 120)")
    parser.add_argument("--out", type=Path, help="writes OUT.json (and OUT.png without --browser); default "
                                                 "benchmarks/results/latency or latency-chromium")
    args = parser.parse_args()
    url = None if args.spawn else base_url(args.url)
    return run_browser(args, url) if args.browser else run_aiortc(args, url)


def configured(args: argparse.Namespace, config: LatencyConfig) -> LatencyConfig:
    config = replace(config, inject_delay_s=args.inject_delay_ms / 1000)
    return config if args.onsets is None else replace(config, onsets=args.onsets)


def run_aiortc(args: argparse.Namespace, url: str | None) -> int:
    from lipstream.measure.report import run_latency

    run_latency(url, configured(args, LatencyConfig()), args.out or RESULTS / "latency")
    return 0


def run_browser(args: argparse.Namespace, url: str | None) -> int:
    from lipstream.measure.browser_latency import BrowserConfig
    from lipstream.measure.browser_report import run_browser_latency

    config = BrowserConfig(configured(args, BrowserConfig().latency))
    run_browser_latency(url, config, args.out or RESULTS / "latency-chromium")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
