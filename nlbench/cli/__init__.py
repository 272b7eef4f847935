"""The ``nlbench`` command: one module per command, errors turned into one clear paragraph.

Exit codes: 0 done, 1 a run failed, 2 bad usage or bad input. ``NLBENCH_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import os
import sys

import click
import typer

from nlbench.errors import NlbenchError
from nlbench.progress import stderr_console

app = typer.Typer(
    name="nlbench",
    help="Benchmark noisy-label training methods for facial expression recognition.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _register_commands() -> None:
    from nlbench.cli import listing, prepare, run, table

    app.command("run")(run.run)
    app.command("table")(table.table)
    app.command("methods")(listing.methods)
    app.command("datasets")(listing.datasets)
    app.command("plugins")(listing.plugins)
    app.command("prepare")(prepare.prepare)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    console = stderr_console()
    debug = bool(os.environ.get("NLBENCH_DEBUG"))
    try:
        code = app(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exit_:
        code = exit_.exit_code
    except click.ClickException as err:
        err.show()
        code = 2
    except click.exceptions.Abort:
        console.print("aborted", markup=False)
        code = 130
    except NlbenchError as err:
        if debug:
            console.print_exception()
        console.print(f"error: {err}", markup=False, highlight=False)
        code = err.exit_code
    except KeyboardInterrupt:
        console.print("interrupted: run the same command again to resume from the last checkpoint.", markup=False)
        code = 130
    except Exception as err:  # a bug: say so, briefly, and how to see more
        if debug:
            console.print_exception()
        else:
            console.print(
                f"internal error: {type(err).__name__}: {err}\n(set NLBENCH_DEBUG=1 to see the traceback)",
                markup=False, highlight=False,
            )
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
