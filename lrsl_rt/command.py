"""What the three command lines share: one error path and argument parsers that show defaults.

``lrsl-rt`` (:mod:`lrsl_rt.cli`), ``python -m train`` and ``python -m export`` each hand their body to
:func:`run_command`, which turns whatever escapes it into one line on stderr and an exit code (after
click's ``ClickException.show``): an :class:`~lrsl_rt.errors.LrslError` prints ``Error: <message>``
and exits with its ``exit_code`` (1 failed run, 2 bad usage); Ctrl-C prints ``Error: interrupted``
and exits 130; a closed stdout (``lrsl-rt predict ... | head``) stops quietly with 1; any other
``OSError`` prints the file and the reason and exits 1. No traceback reaches the user.

:class:`CommandParser` reports bad flags as a ``UsageError`` (so they take the same path) and shows
every option's default in ``--help``. Only the standard library is imported here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable

from .errors import LrslError, UsageError
from .signals import describe_interrupt, sigterm_as_interrupt


def positive_int(value: str) -> int:
    """argparse ``type`` of a count flag: an integer >= 1, else a usage error naming the value."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def run_command(body: Callable[[], int | None], *, interrupted: str = "interrupted") -> int:
    """Run a command line's ``body`` and return its exit code; errors become one ``Error: ...`` line.

    ``interrupted``: what to say after Ctrl-C (e.g. "interrupted; no bundle was written"). SIGTERM is
    handled like Ctrl-C (:mod:`lrsl_rt.signals`): the same clean-up runs, the message says
    "terminated (SIGTERM)" with the rest of ``interrupted``, and the exit code is 128 + the signal.

    >>> run_command(lambda: 0)
    0
    >>> from lrsl_rt.errors import UsageError
    >>> def bad(): raise UsageError("--threads must be positive")
    >>> import contextlib, io; err = io.StringIO()
    >>> with contextlib.redirect_stderr(err): code = run_command(bad)
    >>> code, err.getvalue()
    (2, 'Error: --threads must be positive\\n')
    """
    try:
        with sigterm_as_interrupt():
            code = body()
    except SystemExit as e:  # --help and --version
        return e.code if isinstance(e.code, int) else 0
    except LrslError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (lrsl_rt.signals)
        message, code = describe_interrupt(e)
        if message == "interrupted":
            message = interrupted
        elif interrupted.startswith("interrupted"):
            message += interrupted[len("interrupted") :]
        print(f"Error: {message}", file=sys.stderr)
        return code
    except BrokenPipeError:  # the reader of stdout went away: stop quietly
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:
        print(f"Error: {e.filename or 'I/O'}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0 if code is None else code


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already names its default or
    there is none to show (None, False, a flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or action.default in (None, False, argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are :class:`UsageError` (exit 2 through :func:`run_command`)
    and whose ``--help`` shows defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")
