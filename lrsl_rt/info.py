"""What ``lrsl-rt info`` prints: the environment (for bug reports) and a bundle summary.

Both are plain dicts (``--json`` prints them as they are) plus a short text rendering. The bundle
summary reads only the manifest and file sizes -- no model is loaded -- unless ``verify`` asks for
the sha256 checks too.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path

from .defaults import install_hint
from .manifest import Manifest, read_manifest, resolve_file


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    from . import __version__

    ort_dist = next((d for d in ("onnxruntime", "onnxruntime-gpu") if _version(d)), None)
    env = {
        "lrsl-rt": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "numpy": _version("numpy"),
        "tokenizers": _version("tokenizers"),
        "onnxruntime": f"{_version(ort_dist)} ({ort_dist})" if ort_dist else None,
        "providers": None,
        "matplotlib": _version("matplotlib"),
    }
    try:
        import onnxruntime

        env["providers"] = onnxruntime.get_available_providers()
    except ImportError:
        env["onnxruntime"] = f"not installed ({install_hint('cpu')}; or the gpu extra)"
    return env


def batch_invariant(m: Manifest) -> bool:
    """Whether a text gets the same answer in any batch: what the export recorded
    (``metrics.quantization.batch_invariant``), else yes for fp32/fp16 and no for int8, whose dynamic
    activation scales depend on the whole batch (docs/guide/quantization.md)."""
    recorded = (m.metrics.get("quantization") or {}).get("batch_invariant")
    return recorded if isinstance(recorded, bool) else m.precision != "int8"


def bundle_summary(bundle_dir: Path, verify: bool = False) -> dict:
    m = read_manifest(bundle_dir)
    files = {}
    for role, entry in m.files.items():
        path = resolve_file(bundle_dir, role, entry, verify=verify)
        files[role] = {"path": entry.path, "size": path.stat().st_size, "sha256": entry.sha256}
    return {
        "bundle": str(bundle_dir),
        "format_version": m.format_version,
        "created_at": m.created_at,
        "created_by": m.created_by,
        "n_labels": len(m.labels),
        "labels": list(m.labels),
        "k": m.k,
        "threshold": m.threshold,
        "measure": m.measure,
        "abstain": None
        if m.abstain is None
        else {
            "score": m.abstain.score,
            "threshold": m.abstain.threshold,
            "fallback_label": m.abstain.fallback_label,
            "chosen_by": m.abstain.chosen_by,
            "cascade": None
            if m.abstain.cascade is None
            else {"measure": m.abstain.cascade.measure, "bound": m.abstain.cascade.bound},
        },
        "fusion": m.fusion.to_dict(),
        "fusion_name": m.fusion.name,
        "precision": m.precision,
        "preset": m.preset,
        "batch_invariant": batch_invariant(m),
        "embedding_dim": m.embedding_dim,
        "max_length": m.tokenizer.max_length,
        "classifier_kind": m.classifier_kind,
        "inputs": {
            "classifier": list(m.tokenizer.model_input_names),
            "embedder": list(m.embedder_tokenizer_settings.model_input_names),
        },
        "exits": exit_summary(m),
        "files": files,
        "checksums": "verified" if verify else "not checked (use --verify)",
        "metrics": m.metrics,
    }


def exit_summary(m) -> list[dict]:
    """Each exit's layer, threshold and dev share (the export's calibration), or [] without exits."""
    dev = m.calibration.get("exported", {}).get("exits", {}).get("share", {})
    return [{"layer": e.layer, "threshold": e.threshold, "dev_share": dev.get(str(e.layer))} for e in m.exits]


def _classifier_line(s: dict) -> list[str]:
    """A line for a decoder-only classifier (what it reads, and its own tokenizer); none for an encoder."""
    if s.get("classifier_kind", "encoder") == "encoder":
        return []
    inputs = s["inputs"]
    return [
        f"classifier:  decoder-only, reads each text's last real token ({', '.join(inputs['classifier'])}); "
        f"embedder inputs {', '.join(inputs['embedder'])}"
    ]


def _gate_line(s: dict) -> str:
    return f"gate:        hard when {_measure(s.get('measure', 'variance'), s['k'])} <= {s['threshold']:.6g}"


def _exit_lines(s: dict) -> list[str]:
    if not s.get("exits"):
        return []
    parts = [
        f"layer {e['layer']} ({s.get('measure', 'variance')} > {e['threshold']:.4g}"
        + (f", {100 * e['dev_share']:.1f}% of dev" if e["dev_share"] is not None else "")
        + ")"
        for e in s["exits"]
    ]
    return [f"exits:       {'; '.join(parts)}"]


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_environment(env: dict) -> str:
    return "\n".join(
        f"{key + ':':<12} {', '.join(v) if isinstance(v, list) else v}" for key, v in env.items()
    )


def format_bundle(s: dict) -> str:
    labels = s["labels"]
    shown = ", ".join(labels[:5]) + (", ..." if len(labels) > 5 else "")
    lines = [
        f"bundle:      {s['bundle']}",
        f"labels:      {s['n_labels']} ({shown})",
        *_classifier_line(s),
        _gate_line(s),
        *_exit_lines(s),
        f"fusion:      {s['fusion_name']}",
        *_abstain_line(s["abstain"]),
        f"precision:   {s['precision']}"
        + (f" (preset {s['preset']})" if s["preset"] else "")
        + ("; batch-invariant" if s["batch_invariant"] else "; answers can depend on batch neighbours"),
        f"embedding:   {s['embedding_dim']} dims; max length {s['max_length']} tokens",
        f"created:     {s['created_at']} by {', '.join(f'{k} {v}' for k, v in s['created_by'].items())}",
        f"checksums:   {s['checksums']}",
        "files:",
    ]
    lines += [f"  {role:<17} {f['path']:<36} {_size(f['size']):>10}" for role, f in s["files"].items()]
    if s["metrics"]:
        lines.append("metrics (measured by export):")
        lines += _tree(s["metrics"], depth=1)
    return "\n".join(lines)


def _measure(measure: str, k: int) -> str:
    names = {"variance": f"top-{k} logit variance", "margin": "softmax margin (top-1 - top-2)"}
    return names.get(
        measure,
        {"max_prob": "max softmax probability", "entropy": "minus the softmax entropy"}.get(measure, measure),
    )


def _abstain_line(a: dict | None) -> list[str]:
    if a is None:
        return []
    c = a.get("cascade")
    cascade = f"; scored only when {c['measure']} <= {c['bound']:.6g}" if c else ""
    return [
        f"abstain:     {a['fallback_label']} when {a['score']} <= {a['threshold']:.6g} (threshold by {a['chosen_by']})"
        + cascade
    ]


def _tree(d: dict, depth: int) -> list[str]:
    """Nested dicts as an indented tree, two levels deep; deeper ones inline in braces."""
    pad = "  " * depth
    lines = []
    for key, value in d.items():
        if isinstance(value, dict) and value and depth < 3:
            lines.append(f"{pad}{key}:")
            lines += _tree(value, depth + 1)
        else:
            lines.append(f"{pad}{key}: {_short(value)}")
    return lines


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        if len(value) > 12:  # a curve or a long table: its length, not its values
            return f"[{len(value)} entries]"
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)
