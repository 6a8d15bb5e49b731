"""The markdown of ``benchmarks.serve`` and its check against the serving targets.

Targets (for the machine the run is on), on the first server of the run (the defaults unless
``--server-flags`` says otherwise), against the in-process Reranker (:func:`baseline`: the mean of the
in-process runs just before and just after that server's closed loop): at concurrency 32 its
throughput is at least the in-process one at 32 texts per call; at concurrency 1 its p50 is within
0.5 ms of the in-process batch-1 p50; in the open loop at 80 % of its best rate the p99 of answered
requests is under 5 times their p50; no request fails below the queue limit (:func:`failures`); and
at its highest rate above 100 % (overload, 150 % by default) some requests get 429 and the p99 of
the accepted ones is within the wait its queue bound allows (:func:`overload`).
"""

from __future__ import annotations

BATCHING_OFF = "--max-batch-texts 1"
P99_OVER_P50_MAX = 5.0


def baseline(r: dict, server: dict) -> dict:
    """The in-process figures a server is compared with: ``qps`` (at 32 per call) and ``b1_p50_ms``.

    The mean of the in-process runs on either side of the server's closed loop where the run has them
    (``inprocess_runs``), else the one in-process run (older runs).

    >>> runs = [{"qps": 500.0, "b1": {"p50_ms": 2.0}}, {"qps": 600.0, "b1": {"p50_ms": 1.5}}]
    >>> baseline({"inprocess": runs[0], "inprocess_runs": runs}, {"inprocess_runs": [0, 1]})
    {'qps': 550.0, 'b1_p50_ms': 1.75}
    """
    runs = [r["inprocess_runs"][i] for i in server.get("inprocess_runs", [])] or [r["inprocess"]]
    return {
        "qps": sum(x["qps"] for x in runs) / len(runs),
        "b1_p50_ms": sum(x["b1"]["p50_ms"] for x in runs) / len(runs),
    }


def failures(levels: dict[int, dict]) -> int:
    """Requests that failed below the queue limit: any non-2xx below 100 % of the best rate, and at 100 %
    any but 429 (a 429 says the queue was at its limit: at the best rate an open loop's queue grows by
    chance, so the bound can be reached there; below it, it should not be).

    >>> failures({80: {"statuses": {"200": 9, "429": 1}}, 100: {"statuses": {"200": 5, "429": 3, "500": 1}}})
    2
    """
    bad = 0
    for rate, x in levels.items():
        if rate <= 100:
            allowed = ("2",) if rate < 100 else ("2", "429")
            bad += sum(n for code, n in x.get("statuses", {}).items() if not code.startswith(allowed))
            bad += x.get("unanswered", 0)
    return bad


def targets(r: dict) -> dict:
    out = {}
    server = r["servers"][0]
    ref = baseline(r, server)
    first = server["closed_loop"]
    if "32" in first:
        ratio = first["32"]["qps"] / ref["qps"]
        out["c32_vs_inprocess"] = {"ratio": ratio, "target": ">= 1.0", "met": ratio >= 1.0}
    if "1" in first and first["1"]["p50_ms"] is not None:
        gap = first["1"]["p50_ms"] - ref["b1_p50_ms"]
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
    if any(rate <= 100 for rate in levels):
        bad = failures(levels)
        out["failed_below_queue_limit"] = {
            "count": bad,
            "target": "0 (below 100 %: any non-2xx; at 100 %: any but 429)",
            "met": bad == 0,
        }
    return out


def overload(server: dict) -> dict | None:
    """The server's highest open-loop level above 100 %, beside the longest wait its queue bounds allow there.

    A text accepted at that level waits at most for the texts ahead of it, then for its own batch. What
    is ahead is bounded twice: ``max_queue_texts`` texts, which take that many texts' time at the rate
    the server answers at this level (200s per second, per worker: rejecting the rest costs cores, so
    it is below the best closed-loop rate), and ``max_queue_ms`` where the server has it (0: off). The
    batch time is the level's mean batch at the same rate. None without such a level or without the
    settings (older runs); a run without the level's 200 rate uses the best closed-loop one.

    >>> server = {"workers": 2, "max_queue_texts": 64, "max_queue_ms": 100.0, "max_batch_texts": 32,
    ...           "closed_loop": {"32": {"qps": 400.0}},
    ...           "open_loop": {"150 %": {"sent": 100, "statuses": {"200": 80, "429": 20}, "ok_rps": 320.0,
    ...                                   "mean_batch_texts": 16.0, "latency_ok": {"p99_ms": 250.0}}}}
    >>> o = overload(server)
    >>> o["rate"], o["share_429"], o["count_bound_ms"], o["queue_bound_ms"], o["batch_ms"]
    ('150 %', 0.2, 400.0, 100.0, 100.0)
    """
    levels = {int(name.rstrip(" %")): (name, x) for name, x in (server.get("open_loop") or {}).items()}
    above = [rate for rate in levels if rate > 100]
    best = max((x["qps"] for x in server["closed_loop"].values()), default=0.0)
    if not above or "max_queue_texts" not in server or best <= 0:
        return None
    name, lv = levels[max(above)]
    per_worker = (lv.get("ok_rps") or best) / server["workers"]
    count_ms = 1e3 * server["max_queue_texts"] / per_worker
    time_ms = server.get("max_queue_ms") or None
    return {
        "rate": name,
        "share_429": lv["statuses"].get("429", 0) / lv["sent"] if lv["sent"] else 0.0,
        "p99_ms": (lv.get("latency_ok") or {}).get("p99_ms"),
        "count_bound_ms": count_ms,
        "queue_bound_ms": min(count_ms, time_ms) if time_ms else count_ms,
        "batch_ms": 1e3 * (lv.get("mean_batch_texts") or server["max_batch_texts"]) / per_worker,
        "per_worker_qps": per_worker,
        "max_queue_texts": server["max_queue_texts"],
        "max_queue_ms": time_ms,
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
        f"{o['queue_bound_ms']:.1f} ms (--max-queue-texts {o['max_queue_texts']} at {o['per_worker_qps']:.0f} "
        f"answers/s per worker, this level's rate: {o['count_bound_ms']:.1f} ms"
        + (f"; --max-queue-ms {o['max_queue_ms']:g}" if o["max_queue_ms"] else "")
        + f") + batch time {o['batch_ms']:.1f} ms (this level's mean batch at that rate)"
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
        "| in-process run | 1 text per call: q/s | p50 ms | p95 ms | p99 ms | {} texts per call: q/s |".format(ref["batch"]),
        "|---|---:|---:|---:|---:|---:|",
        *_inprocess_rows(r),
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


def _inprocess_rows(r: dict) -> list[str]:
    runs = r.get("inprocess_runs") or [r["inprocess"]]
    after = {s["inprocess_runs"][1]: s["name"] for s in r["servers"] if "inprocess_runs" in s}
    rows = []
    for i, x in enumerate(runs):
        when = "before the servers" if i == 0 else f"after **{after.get(i, '?')}** closed loop"
        b = x["b1"]
        rows.append(
            f"| {when} | {1e3 / b['mean_ms']:.0f} | {b['p50_ms']:.2f} | {b['p95_ms']:.2f} | {b['p99_ms']:.2f} | "
            f"{x['qps']:.0f} |"
        )
    return rows


def _driver_line(check: dict | None) -> str:
    if not check:
        return "not run (no open-loop levels)"
    verdict = "sustained" if check["sustained"] else "NOT sustained: the open-loop figures measure the driver"
    return (
        f"{check['target_rps']:.0f} requests/s against a trivial endpoint (twice the highest rate): offered "
        f"{_f(check['offered_rps'], '.0f')}/s, answered {_f(check['ok_rps'], '.0f')}/s, late p99 "
        f"{_f((check.get('late') or {}).get('p99_ms'), '.2f')} ms -- {verdict}"
    )
