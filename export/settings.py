"""The settings of ``build_bundle``, checked in one place.

:func:`check_settings` checks every argument before anything is read, so a typo fails at once;
:func:`for_checkpoint` completes them from the checkpoint (its measure, its labels for the abstain
settings, its calibration texts for this CPU's default preset).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from lrsl_rt.defaults import MEASURES
from lrsl_rt.errors import UsageError
from lrsl_rt.fusion import Fusion, fusion_option

from .abstain import AbstainSettings
from .calibration import default_preset
from .evaluate import PARITY_ATOL
from .optimize import resolve_precision


@dataclass(frozen=True)
class Settings:
    """build_bundle's arguments, checked (see its docstring)."""

    precision: str
    preset: str | None
    max_accuracy_drop: float
    batch_size: int
    optimize: bool
    providers: str | list
    threads: int | None
    atol: dict
    fusion_arg: str | None
    user_fusion: Fusion | None
    calibration_texts: str | Path | None = None
    exits: bool | None = None  # None: exits when the checkpoint has exit heads
    measure: str | None = None  # None: the checkpoint's
    exit_budget: float = 0.002
    abstain: AbstainSettings = AbstainSettings()
    preset_detected: bool = False  # the preset is this CPU's default, not the user's


def check_settings(
    precision: str,
    preset: str | None,
    max_accuracy_drop: float,
    *,
    batch_size: int,
    optimize: bool,
    providers: str | list,
    threads: int | None,
    parity_atol: float | None,
    fusion: str | None,
    calibration_texts: str | Path | None,
    exits: bool | None,
    measure: str | None,
    exit_budget: float,
    abstain: AbstainSettings | None,
) -> Settings:
    """``build_bundle``'s arguments checked and resolved (preset for this CPU, tolerances, the user's
    fusion); UsageError names the first bad one."""
    detected = precision == "int8" and preset is None
    preset = resolve_precision(precision, preset)
    if isinstance(max_accuracy_drop, bool) or not isinstance(max_accuracy_drop, (int, float)):
        raise UsageError(f"max_accuracy_drop must be a number (a fraction), got {max_accuracy_drop!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}")
    atol = dict(PARITY_ATOL, **({"logits": parity_atol} if parity_atol is not None else {}))
    try:
        user_fusion = fusion_option(fusion)
    except ValueError as e:
        raise UsageError(f"--fusion: {e}") from e
    if measure is not None and measure not in MEASURES:
        raise UsageError(f"measure must be one of {list(MEASURES)}, got {measure!r}")
    budget = exit_budget
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 <= budget < 1:
        raise UsageError(f"exit_budget must be a fraction in [0, 1), got {budget!r}")
    return Settings(
        precision,
        preset,
        max_accuracy_drop,
        batch_size,
        optimize,
        providers,
        threads,
        atol,
        fusion,
        user_fusion,
        calibration_texts=calibration_texts,
        exits=exits,
        measure=measure,
        exit_budget=exit_budget,
        abstain=abstain or AbstainSettings(),
        preset_detected=detected,
    )


def for_checkpoint(s: Settings, ckpt, log) -> Settings:
    """``s`` completed from the checkpoint: its measure unless one was named, the abstain settings
    checked against its labels, and this CPU's preset fitted to its calibration texts."""
    s = replace(s, measure=s.measure or ckpt.info.measure)
    s.abstain.check(ckpt.info.labels)
    if s.preset_detected:
        preset, note = default_preset(ckpt, s.preset, s.calibration_texts)
        s = replace(s, preset=preset)
        if note:
            log(f"      note: {note}")
    return s
