"""``micropen``: the command line.

Human text and progress on the terminal; with ``--json`` a finishing command prints exactly one
JSON document on one line, and streams print JSON lines. Bad input exits with code 2 and a
one-line message naming the value, the limit and the fix; nothing is sent to the pen.
"""

from __future__ import annotations

import typer

from . import bench

app = typer.Typer(
    name="micropen",
    help="Host controller and simulator for the micropen 12-needle microneedling pen.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(bench.app, name="bench")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
