"""`lipstream` command line: render | serve | live | bench | train.

Each command lives in its own module and contributes `add_arguments(parser)` and `run(args)`;
only the chosen command's module is imported, so `lipstream render` does not pay for aiortc
or torch. Errors a user can fix print one line and exit 2.
"""

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

from lipstream.errors import LipstreamError
from lipstream.logs import warnings_as_log_lines

# command -> (module, name of its add-arguments function, name of its run function, help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "render": ("lipstream.offline", "add_render_arguments", "run_render",
               "render a talking-face mp4 from a photo and an audio file"),
    "serve": ("lipstream.streaming.server", "add_serve_arguments", "run_serve",
              "run the WebRTC server and its page"),
    "live": ("lipstream.streaming.live", "add_live_arguments", "run_live",
             "microphone in, virtual camera out"),
    "bench": ("lipstream.bench", "add_bench_arguments", "run_bench",
              "measure per-stage speed (see also benchmarks/)"),
    "train": ("lipstream.training.train", "add_train_arguments", "run_train",
              "train the audio-to-mouth model and export it to ONNX"),
}


def _command_parts(name: str) -> tuple[Callable[[argparse.ArgumentParser], None],
                                        Callable[[argparse.Namespace], int]]:
    module_name, add_name, run_name, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    return getattr(module, add_name), getattr(module, run_name)


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lipstream", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, _, _, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only what runs
            add_arguments, run = _command_parts(name)
            add_arguments(command_parser)
            command_parser.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        with _sigterm_as_interrupt(), warnings_as_log_lines():
            return int(args.run(args))
    except LipstreamError as exc:
        print(f"lipstream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        return 130


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, a cancelled CI job), raised as Ctrl-C is so that the same clean-up
    runs: render removes its half-written file, live closes its mp4."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """For the command's run; `serve` installs its own graceful handler over it."""
    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
