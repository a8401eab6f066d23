"""The ``micropen`` console script: stays tiny so that Ctrl-C or SIGTERM while the command line
is still importing ends with one line (nothing has reached a pen yet), never a traceback."""

from __future__ import annotations

import signal
import sys


def main() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # until cli.main installs its own
    try:
        from .cli import main as run_cli
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    run_cli()
