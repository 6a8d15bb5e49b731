"""The markdown of ``abstain_cost.py``'s result: timings on and off, stages, quality, targets."""

from __future__ import annotations

from benchmarks.lib.results_render import table


def _ms(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _met(v) -> str:
    return "-" if v is None else ("met" if v else "**NOT met**")


def markdown(result: dict) -> str:
    m, cases = result["method"], result["cases"]
    batch = m["batch"]
    lines = [
        f"Threads {m['threads']}; {m['rounds']} alternating rounds (abstain on / off in one process, the order "
        f"flipped every round); batch 1 = one text per call, tokenization included; q/s at {batch} texts per call.",
        "",
        "### Abstain on against off, per bundle and thread pool",
        "",
    ]
    rows = []
    for name, c in cases.items():
        for pool, p in c["pools"].items():
            rows.append(
                [
                    f"{name} ({pool})",
                    _ms(p["on"]["b1_p50_ms"]),
                    _ms(p["off"]["b1_p50_ms"]),
                    f"{p['b1_ratio']:.2f}x",
                    f"{p['on']['qps']:.0f}",
                    f"{p['off']['qps']:.0f}",
                    f"{p['qps_ratio']:.2f}x",
                    _pct(p["embedded_share"]["on"]),
                    _pct(p["embedded_share"]["off"]),
                ]
            )
    header = ["bundle (pool)", "b1 p50 ms on", "off", "on/off", f"q/s @{batch} on", "off", "on/off"]
    lines += table(header + ["embedded on", "embedded off"], rows)
    lines += ["", "### Quality (test split, export metrics; on the timed texts below)", ""]
    rows = []
    for name, c in cases.items():
        e, q = c["export"], c["pools"][next(iter(c["pools"]))]["quality"]
        cas = e["cascade"]
        rows.append(
            [
                name,
                e["chosen"],
                "-" if not cas else f"{cas['measure']} > {cas['bound']:.4g}",
                "-" if e["test_auroc"] is None else f"{e['test_auroc']:.4f}",
                "-" if e["knn_test_auroc_every_row"] is None else f"{e['knn_test_auroc_every_row']:.4f}",
                _pct(e["test_oos_recall"]),
                _pct(e["knn_test_oos_recall_every_row"]),
                _pct(e["test_inscope_accuracy"]),
                _pct(e["test_inscope_accuracy_off"]),
                f"{_pct(q.get('on', {}).get('oos_recall'))} / {_pct(q.get('on', {}).get('inscope_accuracy'))}",
                _pct(q.get("off", {}).get("inscope_accuracy")),
            ]
        )
    header = ["bundle", "score", "cascade (in scope when)", "test AUROC", "knn every text", "test OOS recall"]
    header += [
        "knn every text",
        "in-scope acc. on",
        "off",
        "timed texts: recall / in-scope on",
        "in-scope off",
    ]
    lines += table(header, rows)
    lines += ["", "### Where the time goes (Reranker's on_run, ms per text, session pool)", ""]
    rows = []
    for name, c in cases.items():
        p = c["pools"].get("session") or next(iter(c["pools"].values()))
        for mode in ("on", "off"):
            for key in ("stages_b1", f"stages_b{batch}"):
                st = p[mode][key]
                cells = ", ".join(f"{s} {v:.3f}" for s, v in st["ms_per_text"].items())
                share = st["unattributed"] / st["measured"] if st["measured"] else 0.0
                rows.append([f"{name} {mode} @{key[8:]}", cells, _ms(st["measured"]), f"{100 * share:.1f}%"])
    lines += table(["bundle, abstain, batch", "stages", "measured", "not in a stage"], rows)
    lines += ["", "### Targets", ""]
    rows = [[name, *(_met(v) for v in c["targets"].values())] for name, c in cases.items()]
    first = next(iter(cases.values()))["targets"]
    lines += table(["bundle", *first], rows)
    return "\n".join(lines) + "\n"
