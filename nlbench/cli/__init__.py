"""The ``nlbench`` command: one module per command, errors turned into one clear paragraph.

Exit codes: 0 done, 1 a run failed, 2 bad usage or bad input, 130 interrupted. Usage errors are
typer's own messages; nlbench's errors are one paragraph; "internal error" is kept for bugs in
nlbench itself. ``NLBENCH_DEBUG=1`` shows tracebacks.

Start-up is kept fast: the command modules import only typer at module level, and torch, timm
and the plugins are imported inside the commands that need them (``nlbench --help``,
``nlbench table`` and ``nlbench plugins`` never import timm; ``--help`` imports no torch).
"""

from __future__ import annotations

import os
import sys

import typer

from nlbench.errors import NlbenchError

app = typer.Typer(
    name="nlbench",
    help="Benchmark noisy-label training methods for facial expression recognition.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

RESUME_HINT = "interrupted: run the same command again to resume from the last checkpoint."


#: What each command is for, in `nlbench --help`: short enough for 80 columns, where click would
#: otherwise cut the docstring's first sentence mid-word with "...".
SUMMARIES = {
    "run": "Train one run; an identical finished run is not retrained.",
    "sweep": "Train a grid of runs, here, in worker processes or on SLURM.",
    "status": "What is done, running, interrupted, failed and still to do.",
    "runs": "List every stored run with its settings and result.",
    "table": "Print results in the paper's layouts, with statistics.",
    "show": "Show one stored run: spec, per-epoch curves, confusion.",
    "export": "Write one row per finished run (CSV, JSON lines, parquet).",
    "methods": "List the training methods, or every option of one.",
    "datasets": "List the dataset plugins and their configured instances.",
    "plugins": "List every plugin found and what it registered.",
    "settings": "List every training setting with its default and range.",
    "prepare": "Check a dataset's layout and build its image cache.",
    "plot": "Draw one kind of figure from the stored runs.",
    "report": "Write one report: every table, figure and run.",
    "noise": "Preview or export the noisy labels of a dataset.",
    "crowd": "Infer labels from crowd votes; compare; simulate.",
    "config": "Print the resolved settings of a run or sweep, and their sources.",
    "evaluate": "Evaluate a stored model on another dataset or split.",
    "predict": "Write a stored model's class probabilities for images (CSV).",
    "new": "Write a new plugin file and its test from a template.",
    "tune": "Tune every method with an equal budget on noisy validation.",
}


def _register_commands() -> None:
    from nlbench.cli import (
        config,
        crowd,
        evaluate,
        export,
        listing,
        new,
        noise,
        plot,
        predict,
        prepare,
        report,
        run,
        runs,
        show,
        status,
        sweep,
        table,
        tune,
    )

    for name, command in (("run", run.run), ("sweep", sweep.sweep), ("status", status.status), ("runs", runs.runs),
                          ("table", table.table), ("show", show.show), ("export", export.export),
                          ("methods", listing.methods), ("datasets", listing.datasets), ("plugins", listing.plugins),
                          ("settings", listing.settings), ("prepare", prepare.prepare), ("plot", plot.plot),
                          ("report", report.report), ("config", config.config), ("evaluate", evaluate.evaluate),
                          ("predict", predict.predict), ("tune", tune.tune)):
        app.command(name, short_help=SUMMARIES[name])(command)
    app.add_typer(noise.app, name="noise", short_help=SUMMARIES["noise"])
    app.add_typer(crowd.app, name="crowd", short_help=SUMMARIES["crowd"])
    app.add_typer(new.app, name="new", short_help=SUMMARIES["new"])


_register_commands()


def _print_version(value: bool) -> None:
    if value:
        from nlbench import __version__
        from nlbench.code_identity import nlbench_commit

        commit = nlbench_commit()
        typer.echo(f"nlbench {__version__}" + (f" (commit {commit[:12]})" if commit else ""))
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print nlbench's version (and git commit) and exit.")) -> None:
    """Benchmark noisy-label training methods for facial expression recognition."""


def _click_exception() -> type[BaseException]:
    """The base class of typer's usage errors.

    typer 0.26+ vendors its own copy of click, so ``click.ClickException`` catches nothing; the
    class is found from typer's public ``BadParameter``, whichever click it was built on.
    """
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _print_error(text: str) -> None:
    from nlbench.progress import stderr_console

    stderr_console().print(text, markup=False, highlight=False, soft_wrap=True)


def storage_advice(err: OSError) -> str | None:
    """One paragraph for a file-system error of the store or the cache (None: not one of those)."""
    import errno

    where = err.filename or "a file"
    stored = ("Nothing stored before is lost (files are replaced atomically) and an interrupted run "
              "resumes from its last checkpoint.")
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"cannot write {where}: the disk (or quota) is full. Free space, or choose another --runs-dir " \
               f"or NLBENCH_CACHE. {stored}"
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {where}: {err.strerror.lower()}. Choose a writable --runs-dir (or NLBENCH_CACHE). {stored}"
    if err.errno == errno.ELOOP:
        return (f"cannot use {where}: a symbolic link on that path points back to itself (a link loop). Fix or "
                f"remove the link, or choose another --runs-dir (or NLBENCH_CACHE).")
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        return (f"cannot create {where}: part of that path is a file, not a folder. Choose another --runs-dir "
                f"(or NLBENCH_CACHE), or move the file away.")
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    debug = bool(os.environ.get("NLBENCH_DEBUG"))
    usage_error = _click_exception()
    try:
        code = app(args=argv, standalone_mode=False, prog_name="nlbench")
        if code == 130:  # typer turns Ctrl-C into exit code 130 without a word
            _print_error(RESUME_HINT)
    except typer.Exit as exit_:
        code = exit_.exit_code
    except typer.Abort:
        _print_error(RESUME_HINT)
        code = 130
    except usage_error as err:
        err.show()  # type: ignore[attr-defined]
        code = getattr(err, "exit_code", 2) or 2
    except NlbenchError as err:
        if debug:
            from nlbench.progress import stderr_console

            stderr_console().print_exception()
        _print_error(f"{getattr(err, 'label', 'error')}: {err}")
        code = err.exit_code
    except KeyboardInterrupt:
        _print_error(RESUME_HINT)
        code = 130
    except OSError as err:
        advice = storage_advice(err)
        if advice is None:
            if debug:
                from nlbench.progress import stderr_console

                stderr_console().print_exception()
            _print_error(f"internal error: {type(err).__name__}: {err}\n(set NLBENCH_DEBUG=1 to see the traceback)")
            code = 1
        else:
            _print_error(f"error: {advice}")
            code = 2
    except Exception as err:  # a bug: say so, briefly, and how to see more
        if debug:
            from nlbench.progress import stderr_console

            stderr_console().print_exception()
        else:
            _print_error(f"internal error: {type(err).__name__}: {err}\n(set NLBENCH_DEBUG=1 to see the traceback)")
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
