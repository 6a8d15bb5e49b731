"""Every flag of ``lrsl-rt serve`` from an environment variable, as text-embeddings-inference reads its arguments.

Flag ``--max-batch-texts`` reads ``LRSL_RT_MAX_BATCH_TEXTS``: ``LRSL_RT_`` and the flag's name in
upper case with ``_`` for ``-``. A flag on the command line wins over its variable, and the variable
over the default; ``--help`` names each variable (``[env: LRSL_RT_PORT]``). A switch (``--abstain`` / ``--no-abstain``) reads ``true``/``false`` (also 1/0, yes/no, on/off).
An empty variable counts as unset. ``--bundle`` reads ``LRSL_RT_BUNDLE`` by its own rule, the same
for every command (:mod:`lrsl_rt.bundle_dir`).

A value the flag's own check refuses is a usage error naming the variable
(``$LRSL_RT_PORT: expected a port number 0-65535, got 'http'``), raised when ``serve`` runs (by
:func:`check_env_values`), not while another command's parser is built, and not when the flag is
given, since the flag replaces it. Standard library only: the parser is built for every command.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from ..errors import UsageError

PREFIX = "LRSL_RT_"
OWN_RULE = ("bundle",)  # dests whose variable is read elsewhere
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class _BadEnv:
    """A default taken from a variable the flag's check refused; an error only if nothing replaces it."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"<invalid: {self.message}>"


def env_name(action: argparse.Action) -> str:
    """The variable of a flag.

    >>> env_name(argparse.ArgumentParser().add_argument("--max-queue-ms"))
    'LRSL_RT_MAX_QUEUE_MS'
    """
    return PREFIX + action.dest.upper()


def env_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The flags of ``parser`` that a variable can set (every option but --help and --bundle)."""
    return [
        a
        for a in parser._actions
        if a.option_strings and not isinstance(a, argparse._HelpAction) and a.dest not in OWN_RULE
    ]


def env_names(parser: argparse.ArgumentParser) -> list[str]:
    return [env_name(a) for a in env_actions(parser)]


def read_env_defaults(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """Name each flag's variable in its help, and make a set variable the flag's default."""
    environ = os.environ if environ is None else environ
    for action in env_actions(parser):
        name = env_name(action)
        action.help = f"{action.help or ''} [env: {name}]".strip()
        raw = environ.get(name, "").strip()
        if raw:
            action.default = _convert(action, raw, name)


def _convert(action: argparse.Action, raw: str, name: str):
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):  # a switch
        if raw.lower() in TRUE:
            return True
        if raw.lower() in FALSE:
            return False
        return _BadEnv(f"${name}: expected true or false (1/0, yes/no, on/off), got {raw!r}")
    try:
        value = action.type(raw) if action.type else raw
    except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
        return _BadEnv(f"${name}: {e}")
    if action.choices is not None and value not in action.choices:
        return _BadEnv(f"${name}: expected one of {', '.join(map(str, action.choices))}, got {raw!r}")
    return value


def check_env_values(args: argparse.Namespace) -> None:
    """UsageError naming the variable when a refused variable was left as a flag's value."""
    for value in vars(args).values():
        if isinstance(value, _BadEnv):
            raise UsageError(value.message)
