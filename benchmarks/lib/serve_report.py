"""The markdown of ``benchmarks.serve`` and its check against the serving targets.

Targets (for the machine the run is on), on the first server of the run (the defaults unless
``--server-flags`` says otherwise): at concurrency 32 its throughput is at least the in-process
Reranker's at 32 texts per call; at concurrency 1 its p50 is within 0.5 ms of the in-process batch-1
p50; in the open loop at 80 % of its best rate the p99 of answered requests is under 5 times their
p50; at rates up to 100 % every request gets a 2xx (no 429, no error); and at its highest rate above
100 % (overload, 150 % by default) some requests get 429 and the p99 of the accepted ones is within
the wait its queue bound allows (:func:`overload`).
"""

from __future__ import annotations

BATCHING_OFF = "--max-batch-texts 1"
P99_OVER_P50_MAX = 5.0


def targets(r: dict) -> dict:
    out = {}
    server, ref = r["servers"][0], r["inprocess"]
    first = server["closed_loop"]
    if "32" in first:
        ratio = first["32"]["qps"] / ref["qps"]
        out["c32_vs_inprocess"] = {"ratio": ratio, "target": ">= 1.0", "met": ratio >= 1.0}
    if "1" in first and first["1"]["p50_ms"] is not None:
        gap = first["1"]["p50_ms"] - ref["b1"]["p50_ms"]
        out["c1_p50_gap_ms"] = {"gap_ms": gap, "target": "<= 0.5 ms", "met": gap <= 0.5}
    levels = {int(name.rstrip(" %")): x for name, x in (server.get("open_loop") or {}).items()}
    at80 = (levels.get(80) or {}).get("latency_ok") or {}
    if at80.get("p50_ms") and at80.get("p99_ms") is not None:
        ratio = at80["p99_ms"] / at80["p50_ms"]
        out["open80_p99_over_p50"] = {
            "ratio": ratio,
            "target": f"< {P99_OVER_P50_MAX:g}",
            "met": ratio < P99_OVER_P50_MAX,
        }
    over = overload(server)
    if over:
        out["overload"] = {
            **over,
            "target": "p99 of accepted <= queue bound + batch time, 429 present",
            "met": over["p99_ms"] is not None
            and over["p99_ms"] <= over["queue_bound_ms"] + over["batch_ms"]
            and over["share_429"] > 0,
        }
    below = [x for rate, x in levels.items() if rate <= 100]
    if below:
        bad = sum(n for x in below for code, n in x.get("statuses", {}).items() if not code.startswith("2"))
        bad += sum(x.get("unanswered", 0) for x in below)
        out["non_2xx_up_to_100pct"] = {"count": bad, "target": "0", "met": bad == 0}
    return out


def overload(server: dict) -> dict | None:
    """The server's highest open-loop level above 100 %, beside the longest wait its queue bound allows.

    A text accepted into a full queue waits for the ``max_queue_texts`` ahead of it: the queue bound,
    in time, is that many texts at the server's measured rate per worker (its best closed-loop q/s /
    workers; one text per request). The batch time is ``max_batch_texts`` at that rate: the batch
    running when the text arrived. None without such a level or without the settings (older runs).

    >>> server = {"workers": 2, "max_queue_texts": 64, "max_batch_texts": 32,
    ...           "closed_loop": {"32": {"qps": 400.0}},
    ...           "open_loop": {"150 %": {"sent": 100, "statuses": {"200": 80, "429": 20},
    ...                                   "latency_ok": {"p99_ms": 250.0}}}}
    >>> o = overload(server)
    >>> o["rate"], o["share_429"], o["queue_bound_ms"], o["batch_ms"]
    ('150 %', 0.2, 320.0, 160.0)
    """
    levels = {int(name.rstrip(" %")): (name, x) for name, x in (server.get("open_loop") or {}).items()}
    above = [rate for rate in levels if rate > 100]
    best = max((x["qps"] for x in server["closed_loop"].values()), default=0.0)
    if not above or "max_queue_texts" not in server or best <= 0:
        return None
    name, lv = levels[max(above)]
    per_worker = best / server["workers"]
    return {
        "rate": name,
        "share_429": lv["statuses"].get("429", 0) / lv["sent"] if lv["sent"] else 0.0,
        "p99_ms": (lv.get("latency_ok") or {}).get("p99_ms"),
        "queue_bound_ms": 1e3 * server["max_queue_texts"] / per_worker,
        "batch_ms": 1e3 * server["max_batch_texts"] / per_worker,
        "per_worker_qps": per_worker,
        "max_queue_texts": server["max_queue_texts"],
        "connections": server.get("open_connections"),
    }


def _overload_line(server: dict) -> str:
    o = overload(server)
    if o is None:
        return ""
    conns = f", the driver on at most {o['connections']} connections" if o["connections"] else ""
    return (
        f"Overload ({o['rate']}, server **{server['name']}**{conns}): 429 on {100 * o['share_429']:.1f} % of "
        f"the requests; p99 of the accepted {_f(o['p99_ms'], '.1f') or 'none'} ms; queue bound "
        f"{o['queue_bound_ms']:.1f} ms (--max-queue-texts {o['max_queue_texts']} / {o['per_worker_qps']:.0f} q/s "
        f"per worker, its best closed-loop rate) + batch time {o['batch_ms']:.1f} ms"
    )


def _shown(t: dict) -> str:
    """A target's measured value, as the targets list shows it."""
    if "queue_bound_ms" in t:
        return (
            f"p99 of accepted {_f(t['p99_ms'], '.1f') or 'none'} ms vs {t['queue_bound_ms'] + t['batch_ms']:.1f} ms, "
            f"429 on {100 * t['share_429']:.1f} %"
        )
    if "gap_ms" in t:
        return f"{t['gap_ms']:.2f} ms"
    return f"{t['count']}" if "count" in t else f"{t['ratio']:.2f}x"


def _f(x, spec: str = ".1f") -> str:
    return "" if x is None else format(x, spec)


def _share(cpu_s, wall_s, cpus: int) -> str:
    return "" if cpu_s is None or not wall_s else f"{100 * cpu_s / (wall_s * cpus):.1f} %"


def _differs(level: dict) -> str:
    d = level.get("label_differs_from_alone")
    return "" if d is None else f"{100 * d:.2f} %"


def _closed_rows(server: dict, cpus: int) -> list[str]:
    rows = []
    for c, lv in server["closed_loop"].items():
        errors = sum(v for v in lv["errors"].values() if isinstance(v, int))
        cells = [
            server["name"], c, f"{lv['qps']:.0f}", _f(lv["p50_ms"], ".2f"), _f(lv["p90_ms"], ".2f"),
            _f(lv["p99_ms"], ".2f"), _f(lv.get("mean_batch_texts")), _differs(lv), str(errors),
            _share(lv["client_cpu_s"], lv["wall_s"], cpus), _share(lv.get("server_cpu_s"), lv["wall_s"], cpus),
        ]  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _open_rows(server: dict, cpus: int) -> list[str]:
    rows = []
    for share, lv in server.get("open_loop", {}).items():
        st, ok = lv["statuses"], lv.get("latency_ok") or {}
        other = lv["sent"] - st.get("200", 0) - st.get("429", 0)
        cells = [
            server["name"], share, f"{lv['target_rps']:.0f}", _f(lv["offered_rps"], ".0f"), _f(lv["ok_rps"], ".0f"),
            str(st.get("200", 0)), str(st.get("429", 0)), str(other), _f(ok.get("p50_ms"), ".2f"),
            _f(ok.get("p99_ms"), ".2f"), _f((lv.get("late") or {}).get("p99_ms"), ".2f"), _f(lv.get("mean_batch_texts")),
            _differs(lv), _share(lv["client_cpu_s"], lv["wall_s"], cpus), _share(lv.get("server_cpu_s"), lv["wall_s"], cpus),
        ]  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def markdown(r: dict) -> str:
    m, cpu, v = r["method"], r["machine"]["cpu"], r["machine"]["versions"]
    cpus = cpu["usable_cpus"]
    flags = " ".join(f for f, on in cpu["int8_flags"].items() if on) or "none"
    ref = r["inprocess"]
    lines = [
        "## lrsl-rt serve benchmark" + (" (QUICK smoke run)" if m["quick"] else ""),
        "",
        f"- bundle {r['bundle']['path']} ({r['bundle']['precision']}, preset {r['bundle']['preset']}; "
        f"answers {'can' if r['bundle']['answers_depend_on_batch'] else 'cannot'} depend on batch neighbours); "
        f"{r['texts']['n']} texts from {r['texts']['source']}, one text per request",
        f"- closed loop: {m['closed_client']}, {m['duration_s']:g} s per level after {m['warmup_s']:g} s unmeasured",
        f"- open loop: {m['open_client']}, {m['duration_s']:g} s per rate; rates are shares of the first "
        "server's best closed-loop q/s; latency counts from each request's due time",
        f"- driver check: {_driver_line(r.get('driver_check'))}",
        f"- in-process: {m['threads']} ONNX Runtime threads; machine: {cpu['model']}, {cpus} usable CPUs; "
        f"int8 flags: {flags}; onnxruntime {v.get('onnxruntime') or v.get('onnxruntime-gpu')}; lrsl-rt {v['lrsl-rt']}",
        "- CPU columns: share of all usable CPUs over the level (client: the load generator; server: all its processes)",
        "",
        "| in-process | q/s | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
        f"| 1 text per call | {1e3 / ref['b1']['mean_ms']:.0f} | {ref['b1']['p50_ms']:.2f} | "
        f"{ref['b1']['p95_ms']:.2f} | {ref['b1']['p99_ms']:.2f} |",
        f"| {ref['batch']} texts per call | {ref['qps']:.0f} | | | |",
        "",
        "Servers: " + "; ".join(f"**{s['name']}**: {s['workers']} worker(s) x {s['threads']} thread(s)" for s in r["servers"]),
        "",
        "| server | concurrency | q/s | p50 ms | p90 ms | p99 ms | mean batch | label differs from alone | errors | client CPU | server CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for s in r["servers"]:
        lines += _closed_rows(s, cpus)
    if any(s.get("open_loop") for s in r["servers"]):
        lines += [
            "",
            "| server | rate | target/s | offered/s | 200/s | 200 | 429 | other | p50 ms (200) | p99 ms (200) | late p99 ms | mean batch | label differs from alone | client CPU | server CPU |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]  # fmt: skip
        for s in r["servers"]:
            lines += _open_rows(s, cpus)
        over = [line for s in r["servers"] if (line := _overload_line(s))]
        lines += ["", *over] if over else []
    lines += ["", "Targets:"]
    for name, t in r["targets"].items():
        lines.append(f"- {name}: {_shown(t)} (target {t['target']}): {'met' if t['met'] else 'NOT met'}")
    if not r["targets"]:
        lines.append("- none evaluated (the run lacks concurrency 1 or 32)")
    return "\n".join(lines)


def _driver_line(check: dict | None) -> str:
    if not check:
        return "not run (no open-loop levels)"
    verdict = "sustained" if check["sustained"] else "NOT sustained: the open-loop figures measure the driver"
    return (
        f"{check['target_rps']:.0f} requests/s against a trivial endpoint (twice the highest rate): offered "
        f"{_f(check['offered_rps'], '.0f')}/s, answered {_f(check['ok_rps'], '.0f')}/s, late p99 "
        f"{_f((check.get('late') or {}).get('p99_ms'), '.2f')} ms -- {verdict}"
    )
