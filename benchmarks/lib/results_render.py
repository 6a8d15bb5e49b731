"""The tables of one results page, by the kind of JSON they come from.

``kind_of`` recognises a result by its shape:

=============  =====================================================  ===================================
kind           written by                                             recognised by
=============  =====================================================  ===================================
latency        ``benchmarks/latency.py --out``                        ``contenders`` and ``method``
accuracy       ``benchmarks/accuracy.py --out``                       ``rows`` (a dict) and ``split``
int8-variants  ``benchmarks/int8_variants.py --out``                  ``rows`` (a list of ``variant``)
training       ``python -m train`` (``CKPT/metrics.json``)            ``results`` and ``fusion_table_dev``
export         ``python -m export`` (``BUNDLE/manifest.json``)        ``format_version`` and ``metrics``
any other      any script that writes ``markdown`` or ``tables``      ``markdown`` (a string) or ``tables``
=============  =====================================================  ===================================

A result that names its ``kind`` and carries ``markdown`` is of that kind whatever else it holds.
The generic shape, for new benchmarks (a server, a cluster run, a soak test)::

    {"kind": "serve", "title": "HTTP serving", "run": run_record(),
     "markdown": "optional text, rendered as it is",
     "tables": [{"title": "...", "header": ["a", "b"], "rows": [[1, 0.5], ...], "note": "..."}]}

``run_record.write_result`` writes this shape, with ``markdown`` and the script's own keys beside.
The scripts that call it, with their kinds: ``levers.py`` (levers), ``gate_measures.py``
(gate_measures), ``frontier.py`` (frontier), ``datasets_table.py``
(datasets), ``invariance.py`` (invariance), ``profile_ops.py`` (profile-ops), ``quant_presets.py``
(quant-presets; quant-presets-timed with ``--time``), ``scaleout.py`` (scaleout), ``serve.py``
(serve), ``soak.py`` (soak) and ``gpu_check.py`` (gpu-check).

``rows`` may also be a list of dicts (the header is then their keys). The latency and accuracy
pages reuse the scripts' own markdown, so the page shows what the script printed.
"""

from __future__ import annotations

GENERIC_KEYS = ("markdown", "tables")


def kind_of(doc) -> str | None:
    """The kind of a result JSON, or None when it is not one (a model config, a tokenizer...).

    >>> kind_of({"contenders": {}, "method": {}}), kind_of({"kind": "serve", "tables": []}), kind_of({"vocab": {}})
    ('latency', 'serve', None)
    """
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("kind"), str) and doc["kind"] and isinstance(doc.get("markdown"), str):
        return doc["kind"]
    if "contenders" in doc and "method" in doc:
        return "latency"
    if isinstance(doc.get("rows"), dict) and "split" in doc:
        return "accuracy"
    rows = doc.get("rows")
    if isinstance(rows, list) and rows and isinstance(rows[0], dict) and "variant" in rows[0]:
        return "int8-variants"
    if "results" in doc and "fusion_table_dev" in doc:
        return "training"
    if "format_version" in doc and "metrics" in doc and "files" in doc:
        return "export"
    if isinstance(doc.get("markdown"), str) or isinstance(doc.get("tables"), list):
        return str(doc.get("kind") or "result")
    return None


# ---- cells and tables ------------------------------------------------------------------------
PERCENT_WORDS = ("accuracy", "share", "agreement")


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def cell(key: str, value) -> str:
    """A table cell; fractions under keys that name a rate are shown in percent.

    >>> cell("accuracy_lrsl", 0.9279), cell("threshold", 2.16912), cell("n", 3080), cell("drop", 0.002)
    ('92.79%', '2.169', '3080', '0.20 pt')
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and key.endswith("drop"):
        return f"{100 * value:.2f} pt"
    if isinstance(value, float):
        if any(w in key for w in PERCENT_WORDS) and 0 <= value <= 1:
            return pct(value)
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return (
            ", ".join(f"{k} {cell(k, v)}" for k, v in value.items())
            if isinstance(value, dict)
            else str(value)
        )
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list]) -> list[str]:
    """Markdown table lines; cells are formatted by :func:`cell` under their column's name."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        out.append(
            "| "
            + " | ".join(c if isinstance(c, str) else cell(h, c) for h, c in zip(header, r, strict=True))
            + " |"
        )
    return out


def records_table(records: list[dict], first: str | None = None) -> list[str]:
    """A table of dicts: one row each, the union of their keys as columns (``first`` column first)."""
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    if first in keys:
        keys.remove(first)
        keys.insert(0, first)
    return table(keys, [[r.get(k) for k in keys] for r in records])


def mapping_table(mapping: dict, key: str = "setting", value: str = "value") -> list[str]:
    """A two-column table of a dict, nested dicts flattened with dotted keys."""
    return table([key, value], [[k, cell(k, v)] for k, v in flatten(mapping).items()])


def flatten(d: dict, prefix: str = "") -> dict:
    """
    >>> flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3})
    {'a.b': 1, 'a.c.d': 2, 'e': 3}
    """
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def without(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def section(title: str, lines: list[str], note: str | None = None) -> list[str]:
    return ["", f"## {title}", "", *lines, *(["", note] if note else [])]


# ---- LRSL reports (training, export) -------------------------------------------------------------
REPORT_HEADER = ["", "n", "classifier", "LRSL", "LRSL - classifier", "hard share (n)",
                 "hard: classifier -> LRSL", "fixed / broken"]  # fmt: skip


def report_row(name: str, r: dict) -> list[str]:
    """One row of an ``lrsl_rt.accuracy.lrsl_report`` dict."""
    gain = (r["accuracy_lrsl"] - r["accuracy_classifier"]) if r.get("accuracy_lrsl") is not None else None
    return [name, str(r["n"]), pct(r["accuracy_classifier"]), pct(r["accuracy_lrsl"]),
            "-" if gain is None else f"{100 * gain:+.2f} pt", f"{pct(r['hard_share'])} ({r['n_hard']})",
            f"{pct(r['hard_accuracy_classifier'])} -> {pct(r['hard_accuracy_lrsl'])}",
            f"{r['fixed']} / {r['broken']}"]  # fmt: skip


def render_training(m: dict) -> list[str]:
    rows = [report_row(split, r) for split, r in m["results"].items()]
    lines = section("Accuracy of the PyTorch models", table(REPORT_HEADER, rows),
                    "hard: top-k variance <= the threshold; fixed / broken: hard samples LRSL turned right / wrong")  # fmt: skip
    fusion = m["fusion"]
    cal = {"threshold (sigma2_mis)": m["threshold"], "fusion": fusion, "seed": m.get("seed")}
    for side in ("right", "wrong"):
        v = m.get("variance_dev", {}).get(side)
        if v:
            cal[f"dev top-k variance, classifier {side}: mean"] = v["mean"]
    lines += section("Calibration", mapping_table(cal))
    paper = [{"split": s, "rule": name, **without(r, "fusion", "name")}
             for s, rules in m.get("paper_rules", {}).items() for name, r in rules.items()]  # fmt: skip
    if paper:
        lines += section("The paper's fusion rules on the same hard samples", records_table(paper))
    if m.get("fusion_table_dev"):
        rows = [without(r, "fusion") for r in m["fusion_table_dev"]]
        lines += section("Fusion candidates on dev", records_table(rows, first="name"),
                         "gain, discordant, z: against the incumbent rule on the same dev samples (McNemar)")  # fmt: skip
    if m.get("embedder_zero_shot"):
        zs = [
            {"when": k, **{f"{s} accuracy": a for s, a in v.items()}}
            for k, v in m["embedder_zero_shot"].items()
            if isinstance(v, dict)
        ]
        note = m["embedder_zero_shot"].get("reused_from")
        note = f"the embedder of {note}, reused unchanged (--embedder-from)" if isinstance(note, str) else ""
        lines += section("Embedder zero-shot (argmax label similarity)", records_table(zs), note)
    for key, title in (("classifier_history", "Classifier epochs"), ("embedder_history", "Embedder epochs")):
        if m.get(key) and isinstance(m[key][0], dict):
            lines += section(title, records_table(m[key]))
    if m.get("seconds"):
        lines += section("Wall time (s)", mapping_table(m["seconds"], "step", "seconds"))
    counts = {k: v for k, v in m.get("rows", {}).items() if k != "train_per_class"}
    lines += section("Data and settings", mapping_table({"rows": counts, "triplets": m.get("triplets", {}),
                                                         "config": m.get("config", {})}))  # fmt: skip
    return lines


def render_export(man: dict) -> list[str]:
    met = man["metrics"]
    rows = []
    if met.get("pytorch"):
        rows.append(report_row(f"PyTorch ({met['pytorch'].get('split')})", met["pytorch"]))
    rows += [report_row(f"bundle ({split})", r) for split, r in met.get("bundle", {}).items()]
    lines = section(f"Accuracy of the {man['precision']} bundle", table(REPORT_HEADER, rows))
    if met.get("gate"):
        lines += section("Accuracy gate", mapping_table(met["gate"]))
    if met.get("shipped_vs_fp32") or met.get("parity"):
        lines += section("Agreement with fp32 and parity with PyTorch",
                         mapping_table({"shipped_vs_fp32": met.get("shipped_vs_fp32", {}), "parity": met.get("parity", {})}))  # fmt: skip
    cal = {
        k: {kk: vv for kk, vv in v.items() if kk != "table"} for k, v in man.get("calibration", {}).items()
    }
    lines += section("Calibration (PyTorch -> exported)", mapping_table(cal))
    files = [
        {"role": role, "path": f.get("path"), "bytes": f.get("size")} for role, f in man["files"].items()
    ]
    lines += section("Files", records_table(files))
    if met.get("graphs"):
        graphs = [
            {"graph": g, **(v if isinstance(v, dict) else {"value": v})} for g, v in met["graphs"].items()
        ]
        lines += section("Graphs", records_table(graphs))
    settings = {"precision": man["precision"], "preset": man.get("preset"), **met.get("export_settings", {})}
    lines += section("Export settings", mapping_table(settings))
    if met.get("timings_s"):
        lines += section("Wall time (s)", mapping_table(met["timings_s"], "step", "seconds"))
    return lines


def render_int8_variants(r: dict) -> list[str]:
    splits = [s for s in ("dev", "test") if s in r["rows"][0]]
    header = ["variant", "MB", *(f"{s}: {c}" for s in splits for c in ("agreement", "differ", "accuracy")),
              "batch-1 ms", "q/s"]  # fmt: skip
    rows = []
    for v in r["rows"]:
        speed = v.get("speed", {})
        rows.append([v["variant"], f"{v['size'] / 1e6:.1f}",
                     *(cell(c, v[s][c]) for s in splits for c in ("agreement", "differ", "accuracy")),
                     cell("ms", speed.get("batch1_ms")), cell("qps", speed.get("qps"))])  # fmt: skip
    fp32 = r.get("fp32_speed") or {}
    note = f"fp32 reference: batch-1 {cell('ms', fp32.get('batch1_ms'))} ms, {cell('qps', fp32.get('qps'))} q/s; threads {r.get('threads')}"
    return section(f"int8 variants of {r.get('checkpoint')} against fp32", table(header, rows), note)


def render_generic(doc: dict) -> list[str]:
    lines = []
    if doc.get("markdown"):
        lines += ["", doc["markdown"].strip()]
    for t in doc.get("tables") or []:
        rows = t.get("rows") or []
        if rows and isinstance(rows[0], dict):
            body = records_table(rows)
        else:
            body = table(list(t.get("header") or t.get("columns") or []), rows)
        lines += section(t.get("title", "Table"), body, t.get("note"))
    return lines


def render_latency(r: dict) -> list[str]:
    from benchmarks.lib.latency_report import markdown

    return ["", markdown(r).replace("## lrsl-rt latency benchmark", "## Latency benchmark", 1)]


def render_accuracy(r: dict) -> list[str]:
    from benchmarks.lib.accuracy_report import markdown

    return ["", markdown(r)]


RENDERERS = {
    "latency": render_latency,
    "accuracy": render_accuracy,
    "int8-variants": render_int8_variants,
    "training": render_training,
    "export": render_export,
}
TITLES = {
    "latency": "Latency, throughput and start-up",
    "accuracy": "Accuracy: PyTorch checkpoint and bundles",
    "int8-variants": "int8 quantization variants",
    "training": "Training run",
    "export": "Bundle export",
}


def render(kind: str, doc: dict) -> list[str]:
    return RENDERERS.get(kind, render_generic)(doc)


def title(kind: str, doc: dict) -> str:
    if kind == "export":
        return f"{TITLES[kind]} ({doc['precision']}{', ' + doc['preset'] if doc.get('preset') else ''})"
    return TITLES.get(kind) or str(doc.get("title") or kind)
