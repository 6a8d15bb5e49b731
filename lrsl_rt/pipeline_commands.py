"""``lrsl-rt train`` and ``lrsl-rt export``: the training and export command lines under the one CLI.

Each is ``python -m train`` / ``python -m export`` itself: :func:`run_pipeline` hands the arguments
after the command's name to that package's ``main`` (the same parser, the same code, only the name
in usage lines and errors differs), so ``lrsl-rt train --help`` lists the very flags of ``python -m
train``. ``train`` and ``export`` are installed beside ``lrsl_rt`` (pyproject's packages), so both
forms run from any folder. They need the ``train`` extra (torch, transformers, onnx); this module
imports none of it, and a missing module becomes one line naming the extra to install.
"""

from __future__ import annotations

import importlib

from .defaults import install_hint
from .errors import UsageError

# name -> the one-line help of `lrsl-rt --help`
COMMANDS = {
    "train": "fine-tune the classifier and the embedder, calibrate, write a checkpoint (python -m train)",
    "export": "export a checkpoint to a bundle, checked against PyTorch (python -m export)",
}


def add_pipeline_parsers(sub) -> None:
    """List the two commands in ``lrsl-rt --help``; :func:`run_pipeline` parses their arguments."""
    for name, text in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)


def run_pipeline(command: str, argv: list[str]) -> int:
    """Run ``python -m <command>``'s ``main`` on ``argv``; its exit code.

    >>> run_pipeline("deploy", [])
    Traceback (most recent call last):
    ...
    lrsl_rt.errors.UsageError: unknown command 'deploy'; choose train or export
    """
    if command not in COMMANDS:
        raise UsageError(f"unknown command {command!r}; choose {' or '.join(COMMANDS)}")
    try:
        module = importlib.import_module(f"{command}.__main__")
        return module.main(argv, prog=f"lrsl-rt {command}")
    except ModuleNotFoundError as e:  # raised before or past the command's own error path
        missing = (e.name or "").split(".")[0] or "a module"
        raise UsageError(
            f"`lrsl-rt {command}` needs {missing}, part of the train extra: {install_hint('train')}"
        ) from e
