"""The markdown of ``benchmarks/serve.py`` and its check against the issue's targets.

Targets (issue 14, for the machine the run is on): at concurrency 32 the served throughput is at least
70 % of the in-process Reranker's at 32 texts per call and at least twice the batching-off server's;
at concurrency 1 the served p50 is within 1.5 ms of the in-process batch-1 p50.
"""

from __future__ import annotations


def targets(r: dict) -> dict:
    out = {}
    on, off = r["served"]["levels"], r["served_batching_off"]["levels"]
    ref = r["inprocess"]
    if "32" in on:
        out["c32_vs_inprocess"] = {
            "ratio": on["32"]["qps"] / ref["qps"],
            "target": ">= 0.70",
            "met": on["32"]["qps"] >= 0.70 * ref["qps"],
        }
        if "32" in off:
            out["c32_vs_batching_off"] = {
                "ratio": on["32"]["qps"] / off["32"]["qps"],
                "target": ">= 2",
                "met": on["32"]["qps"] >= 2 * off["32"]["qps"],
            }
    if "1" in on:
        gap = on["1"]["p50_ms"] - ref["b1"]["p50_ms"]
        out["c1_p50_gap_ms"] = {"gap_ms": gap, "target": "<= 1.5 ms", "met": gap <= 1.5}
    return out


def _row(name: str, level: dict) -> str:
    batch = level.get("mean_batch_texts")
    differs = level.get("label_differs_from_alone")
    cells = [
        name,
        f"{level['qps']:.0f}",
        f"{level['p50_ms']:.2f}",
        f"{level['p95_ms']:.2f}",
        f"{level['p99_ms']:.2f}",
        "" if batch is None else f"{batch:.1f}",
        "" if differs is None else f"{100 * differs:.2f} % ({level['n_label_differs']})",
        str(level.get("n_failures", "")),
    ]
    return "| " + " | ".join(cells) + " |"


def markdown(r: dict) -> str:
    m, cpu, v = r["method"], r["machine"]["cpu"], r["machine"]["versions"]
    flags = " ".join(f for f, on in cpu["int8_flags"].items() if on) or "none"
    ref = r["inprocess"]
    lines = [
        "## lrsl-rt serve benchmark" + (" (QUICK smoke run)" if m["quick"] else ""),
        "",
        f"- bundle {r['bundle']['path']} ({r['bundle']['precision']}, preset {r['bundle']['preset']}); "
        f"{r['texts']['n']} texts from {r['texts']['source']}",
        f"- {m['threads']} ONNX Runtime threads (thread pool {m['thread_pool']}) in the server and the "
        f"in-process run; {m['requests']} requests per level after {m['warmup']} warm-up; max wait {m['max_wait_ms']} ms",
        f"- client: {m['client']}",
        f"- machine: {cpu['model']}, {cpu['usable_cpus']} usable CPUs; int8 flags: {flags}; "
        f"onnxruntime {v.get('onnxruntime') or v.get('onnxruntime-gpu')}; lrsl-rt {v['lrsl-rt']}",
        "",
        "| contender | q/s | p50 ms | p95 ms | p99 ms | mean batch | label differs from alone | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        _row("in-process, 1 text per call", {**ref["b1"], "qps": 1e3 / ref["b1"]["mean_ms"]}),
        "| in-process, {} texts per call | {:.0f} | | | | {} | | |".format(
            ref["batch"], ref["qps"], ref["batch"]
        ),
    ]
    for key, title in (("served", "served"), ("served_batching_off", "served, batching off")):
        for c, level in r[key]["levels"].items():
            lines.append(_row(f"{title}, concurrency {c}", level))
    lines += ["", "Targets:"]
    for name, t in r["targets"].items():
        shown = f"{t['gap_ms']:.2f} ms" if "gap_ms" in t else f"{t['ratio']:.2f}x"
        lines.append(f"- {name}: {shown} (target {t['target']}): {'met' if t['met'] else 'NOT met'}")
    if not r["targets"]:
        lines.append("- none evaluated (the run lacks concurrency 1 or 32)")
    return "\n".join(lines)
