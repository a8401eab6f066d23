"""The command line's last line of defence: whatever goes wrong, one line on stderr.

A technician must never meet a Python traceback. Commands report their own errors (one line
naming the value, the limit and the fix); what escapes them still ends as one line here:

* a usage mistake (unknown option, a value of the wrong type): exit 2, with the ``--help`` to read;
* a typed micropen error: exit 2 for bad input, 1 otherwise;
* an operating-system error (a path, a permission, a full disk): exit 1, naming the file;
* anything else is a defect of ours: exit 1, the traceback saved to a crash report whose path
  the line gives (``MICROPEN_DEBUG=1`` shows it on the terminal instead).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

try:  # typer ≥ 0.22 vendors click; older ones use the click package
    from typer._click import exceptions as cx
    from typer._click.utils import echo
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import echo
    from click import exceptions as cx

import typer

from micropen.host import paths
from micropen.protocol.errors import LocalProtocolError, MicropenError

from .common import fail_line

__all__ = ["run_guarded"]


def run_guarded(app: Any) -> int:
    """Run the typer ``app`` and return the process exit code, never raising past here
    (``SystemExit`` and ``KeyboardInterrupt`` excepted: the caller owns those)."""
    try:
        result = app(standalone_mode=False)
    except cx.NoArgsIsHelpError as exc:
        echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
        return 2
    except cx.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "micropen"
        return fail_line(f"{exc.format_message()}; see {where} --help", 2)
    except typer.Abort:
        return fail_line("aborted", 1)
    except cx.ClickException as exc:
        return fail_line(exc.format_message(), exc.exit_code)
    except (KeyboardInterrupt, SystemExit):
        raise
    except LocalProtocolError as exc:  # InvalidInput and the codec's own refusals
        return fail_line(str(exc), 2)
    except MicropenError as exc:
        return fail_line(str(exc), 1)
    except OSError as exc:
        return fail_line(_os_error(exc), 1)
    except Exception as exc:  # the point of this module: a defect, reported in one line
        if os.environ.get("MICROPEN_DEBUG"):
            raise
        return fail_line(_crash(exc), 1)
    return result if isinstance(result, int) else 0


def _os_error(exc: OSError) -> str:
    what = exc.strerror or type(exc).__name__
    where = f" {exc.filename}" if exc.filename else ""
    return f"{what}:{where}; check the path and its permissions (or free disk space), then retry"


def _crash(exc: BaseException) -> str:
    """Save the traceback; the one line says where, and that it is our defect to fix."""
    summary = f"internal error ({type(exc).__name__}: {str(exc)[:200]})"
    folder = paths.crash_dir()
    name = f"crash-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.txt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        report = folder / name
        report.write_text(
            f"micropen {' '.join(sys.argv[1:])}\n\n" + "".join(traceback.format_exception(exc)),
            encoding="utf-8",
        )
    except OSError:
        return f"{summary}; run again with MICROPEN_DEBUG=1 to see the details and report them"
    return f"{summary}; details saved in {report} — please report it"
