"""Markdown tables and the plot of ``latency.py``'s result dict.

Each figure is the median of the rounds; latency medians carry their [min-max] range. The figure in
parentheses compares with the PyTorch baseline so that >1x always means better: baseline/contender
for times, memory and load time, contender/baseline for throughput; accuracies show the difference
in percentage points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.lib.contenders import DESCRIPTIONS

STAGES = ("tokenize", "classifier", "embedder", "rule", "abstain")  # lrsl_rt.defaults.STAGES, in order
FULL = ("lrsl_int8", "lrsl_int8_noabstain", "lrsl_int8_shared", "lrsl_fp32")
SPINNING = {
    "default": "each library's default (Optimum/ONNX Runtime on; lrsl_rt on during a run, off after it; "
    "lrsl_int8_shared's pool on)",
    "on": "on",
    "off": "off",
}


def num(v: float) -> str:
    """A figure with three or four significant digits.

    >>> num(1234.5), num(12.34), num(1.234), num(0.001234)
    ('1234', '12.3', '1.23', '0.00123')
    """
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if v >= 0.01 else f"{v:.3g}"


def _cell(
    r: dict, name: str, key: str, unit: str = "", higher_better: bool = False, spread: bool = False
) -> str:
    s = r["contenders"][name]["summary"].get(key)
    if s is None:
        return "-"
    text = num(s["median"]) + unit
    if spread and s["n"] > 1:
        text += f" [{num(s['min'])}-{num(s['max'])}]"
    base = r["baseline"] and r["contenders"][r["baseline"]]["summary"].get(key)
    if base and name != r["baseline"] and s["median"] > 0 and base["median"] > 0:
        ratio = s["median"] / base["median"] if higher_better else base["median"] / s["median"]
        text += f" ({ratio:.1f}x)"
    return text


def _accuracy_cell(r: dict, name: str, key: str) -> str:
    s = r["contenders"][name]["summary"].get(key)
    if s is None:
        return "-"
    text = f"{100 * s['median']:.2f}%"
    base = r["baseline"] and r["contenders"][r["baseline"]]["summary"].get("accuracy_classifier")
    if base and name != r["baseline"]:
        text += f" ({100 * (s['median'] - base['median']):+.2f} pt)"
    return text


def _recall_cell(r: dict, name: str) -> str:
    s = r["contenders"][name]["summary"].get("oos_recall")
    return "-" if s is None else f"{100 * s['median']:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _header(r: dict) -> list[str]:
    m, cpu, v = r["method"], r["machine"]["cpu"], r["machine"]["versions"]
    flags = " ".join(f for f, on in cpu["int8_flags"].items() if on) or "none"
    lines = [
        "## lrsl-rt latency benchmark",
        "",
        f"- texts: {r['texts']['n']} from {r['texts']['source']} (labels: {'yes' if r['texts']['labels'] else 'no'}); "
        f"max length {m['max_length']} tokens",
        f"- threads {m['threads']} for every contender; rounds {m['repeats']}; warm-up {m['warmup']} queries; "
        f"ORT thread spinning: {SPINNING[m['spinning']]}; ONNX Runtime provider: {m['provider_used']}"
        + (" (QUICK smoke run)" if m["quick"] else ""),
        f"- machine: {cpu['model']}, {cpu['usable_cpus']} usable CPUs, {cpu['clock_mhz']} MHz; int8 flags: {flags}",
        f"- onnxruntime {v.get('onnxruntime') or v.get('onnxruntime-gpu')} {v.get('onnxruntime_providers')}; "
        f"lrsl-rt {v['lrsl-rt']}; torch {v['torch']}; transformers {v['transformers']}; optimum-onnx {v['optimum-onnx']}",
    ]
    if m.get("provider_note"):
        lines.append(f"- **WARNING: {m['provider_note']}**")
    mismatch = [
        n for n, c in r["contenders"].items() if c["rounds"] and not c["rounds"][0]["labels_match_model"]
    ]
    if r["texts"]["labels"] and mismatch:
        lines.append(
            f"- some texts' labels are not the labels of {mismatch} (out-of-scope texts): accuracy is over the "
            "in-scope texts (an abstained one counts wrong); out-of-scope recall is the share of the others "
            "abstained on"
        )
    if m["provider_requested"] == "cuda":
        used = {n: c["rounds"][0]["providers"] for n, c in r["contenders"].items() if c["rounds"]}
        lines.append(f"- session providers: {used} (the PyTorch baseline runs on CPU)")
    return lines


def _latency(r: dict, names: list[str]) -> list[str]:
    header = [
        "contender",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p50 ms model only",
        "p95 ms model only",
        "p99 ms model only",
    ]
    rows = [
        [name]
        + [_cell(r, name, f"b1_{q}_ms", spread=q == "p50") for q in ("p50", "p95", "p99")]
        + [_cell(r, name, f"b1_model_{q}_ms", spread=q == "p50") for q in ("p50", "p95", "p99")]
        for name in names
    ]
    return [
        "",
        "### Batch-1 latency per query (tokenization included, then model only)",
        "",
        *_table(header, rows),
    ]


def _throughput(r: dict, names: list[str]) -> list[str]:
    sizes = r["method"]["batch_sizes"]
    header = [
        "contender",
        *(f"q/s @{b}" for b in sizes),
        "peak RSS MB",
        "load s",
        "hard share",
        "accuracy classifier",
        "accuracy LRSL",
        "out-of-scope recall",
    ]
    rows = []
    for name in names:
        hard = r["contenders"][name]["summary"].get("hard_share")
        rows.append(
            [name]
            + [_cell(r, name, f"qps_{b}", higher_better=True, spread=True) for b in sizes]
            + [_cell(r, name, "rss_peak_mb"), _cell(r, name, "load_s")]
            + [f"{100 * hard['median']:.1f}%" if hard else "-"]
            + [_accuracy_cell(r, name, "accuracy_classifier"), _accuracy_cell(r, name, "accuracy_lrsl")]
            + [_recall_cell(r, name)]
        )
    return [
        "",
        "### Throughput (end to end), memory, load time, accuracy on the same texts",
        "",
        *_table(header, rows),
    ]


def breakdown_medians(r: dict, name: str) -> dict:
    """Batch size -> {stage or 'predict': median ms/query over the rounds}."""
    rounds = [x["breakdown"] for x in r["contenders"][name]["rounds"] if "breakdown" in x]
    out = {}
    for b in rounds[0] if rounds else ():
        med = {s: float(np.median([x[b]["ms_per_query"].get(s, 0.0) for x in rounds])) for s in STAGES}
        measured = [x[b]["predict_ms_per_query"] for x in rounds if x[b]["predict_ms_per_query"]]
        med["predict"] = float(np.median(measured)) if measured else None
        same = [x[b].get("labels_agree_with_batch1_predict") for x in rounds]
        med["same_as_alone"] = float(np.median(same)) if None not in same else None
        out[b] = med
    return out


def _breakdown(r: dict) -> list[str]:
    cols = [(n, b, meds) for n in FULL if n in r["contenders"] for b, meds in breakdown_medians(r, n).items()]
    if not cols:
        return []
    header = ["stage (ms/query)", *(f"{n} @{b}" for n, b, _ in cols)]
    rows = []
    for stage in STAGES:
        rows.append(
            [stage]
            + [
                f"{num(m[stage])} ({100 * m[stage] / max(sum(m[s] for s in STAGES), 1e-12):.0f}%)"
                for _, _, m in cols
            ]
        )
    rows.append(["sum of stages"] + [num(sum(m[s] for s in STAGES)) for _, _, m in cols])
    rows.append(
        ["Reranker.predict measured"] + [num(m["predict"]) if m["predict"] else "-" for _, _, m in cols]
    )
    rows.append(
        ["not in a stage"]
        + [
            f"{100 * (1 - sum(m[s] for s in STAGES) / m['predict']):.1f}%" if m["predict"] else "-"
            for _, _, m in cols
        ]
    )
    rows.append(
        ["LRSL labels same as one text per call"]
        + ["-" if m.get("same_as_alone") is None else f"{100 * m['same_as_alone']:.2f}%" for _, _, m in cols]
    )
    note = (
        "Stages: the Reranker's own on_run hook, summed over the very calls that are timed (batch 1: the "
        "one-text calls; the largest batch: its full batches). embedder: averaged over all queries, it runs "
        "on the hard ones (and, when abstaining with an embedder score, the texts the cascade does not "
        "settle); rule: the gate, the fusion and the argmax; abstain: the out-of-scope score. Not in a stage: "
        "records and bookkeeping. Labels same as one text per call: the share of texts whose label in these "
        "calls equals their label predicted alone (batch invariance; below 100% only with a dynamic int8 preset)"
    )
    return ["", "### Where the LRSL time goes", "", *_table(header, rows), "", note]


def _startup(r: dict) -> list[str]:
    s = r["startup"]
    if not s:
        return []
    ms = lambda d: f"{1e3 * d['median']:.0f} ms"  # noqa: E731
    lines = ["", f"### Start-up (median of {s['runs']} fresh processes)", ""]
    for key in ("import_lrsl_rt", "import_reranker"):
        d = s[key]
        lines.append(f"- `{d['statement']}`: {ms(d['in_process_s'])} in process; process wall {ms(d['process_wall_s'])} "
                     f"(bare interpreter {ms(s['bare_interpreter_wall_s'])})")  # fmt: skip
    lines.append(
        f"- cold `{s['cold_predict']['command']}`: {ms(s['cold_predict']['wall_s'])} wall from process start"
    )
    return lines


def _macs(r: dict) -> list[str]:
    u = r["mac_utilisation"]
    if "peak" not in u:
        return ["", f"### int8 MAC utilisation: {u['note']}"]
    p, b = u["peak"], u["largest_batch"]
    peak = p["peak_macs_per_s"]
    lines = [
        "",
        "### int8 MAC utilisation (classifier only)",
        "",
        f"- {num(u['linear_macs_per_query'] / 1e6)} M int8 linear MACs per query (+{num(u['float_attention_macs_per_query'] / 1e6)} M "
        f"float attention MACs) at {num(u['mean_tokens'])} tokens on average",
        f"- peak {num(peak / 1e9) if peak else '?'} GMAC/s = {p['assumption']}",
        "",
    ]
    rows = []
    for name, c in u["contenders"].items():

        def share(x):
            return f"{100 * x:.1f}%" if x is not None else "- (not int8)"

        rows.append([name, num(c["b1_model_macs_per_s"] / 1e9), share(c["b1_model_share_of_peak"]),
                     num(c[f"b{b}_macs_per_s"] / 1e9), share(c[f"b{b}_share_of_peak"])])  # fmt: skip
    header = ["contender", "GMAC/s batch 1 model only", "of peak", f"GMAC/s @{b} end to end", "of peak"]
    return lines + _table(header, rows) + ["", u["note"]]


def markdown(r: dict) -> str:
    names = [n for n in DESCRIPTIONS if n in r["contenders"]]
    lines = _header(r) + _latency(r, names) + _throughput(r, names)
    compared = "(Nx): compared with pytorch_fp32, >1x is better" if r["baseline"] else "no PyTorch baseline"
    lines += ["", f"{compared}. " + "; ".join(f"{n}: {DESCRIPTIONS[n]}" for n in names)]
    lines += _breakdown(r) + _startup(r) + _macs(r)
    for name, why in r["skipped"].items():
        lines.append(f"\nskipped {name}: {why}")
    for name, errs in r["errors"].items():
        lines.append(f"\nERROR {name}: {errs[0]}")
    return "\n".join(lines)


def plot(r: dict, path: Path) -> Path:
    """Batch-1 p50 latency and largest-batch throughput per contender, with the rounds' min-max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in DESCRIPTIONS if n in r["contenders"]]
    b = 32 if 32 in r["method"]["batch_sizes"] else max(r["method"]["batch_sizes"])
    panels = (
        ("b1_p50_ms", "batch-1 p50 latency, ms (lower is better)"),
        (f"qps_{b}", f"throughput at batch {b}, queries/s"),
    )
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.6 * len(names) + 2))
    for ax, (key, title) in zip(axes, panels, strict=True):
        s = [r["contenders"][n]["summary"][key] for n in names]
        med = np.array([x["median"] for x in s])
        err = np.array([[x["median"] - x["min"] for x in s], [x["max"] - x["median"] for x in s]])
        ax.barh(
            names,
            med,
            xerr=err,
            color=["#888" if n.startswith(("pytorch", "optimum")) else "#2a7" for n in names],
        )
        ax.invert_yaxis()
        if med.min() > 0 and med.max() / med.min() > 50:
            ax.set_xscale("log")
            title += ", log scale"
        ax.set_title(title)
        for y, v in enumerate(med):
            ax.text(v, y, f" {num(v)}", va="center")
    cpu = r["machine"]["cpu"]
    fig.suptitle(
        f"lrsl-rt vs PyTorch / Optimum: {cpu['model']}, {r['method']['threads']} threads, {r['texts']['n']} texts"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
