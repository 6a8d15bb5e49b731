"""The README's results block: the headline table, PyTorch's accuracy, the AUROCs and the peer page.

``make results`` writes ``docs/results/readme.json`` -- each figure with the page it comes from --
from the newest run in the history of the pages below, then the README's block between
:data:`BEGIN` and :data:`END` from that file alone, so the same JSON gives the same block byte for
byte. A part whose page has no JSON history yet (a page carried over from before the history
existed) keeps the figures readme.json already holds, which were read off that page; a test checks
every figure of readme.json against the page it names.

- headline: ``frontier-banking77`` (``make frontier``): each row's LRSL accuracy, batch-1 p50 and
  q/s; the machine, date, rounds and int8 preset; PyTorch's accuracy from the first row's export record;
- out_of_scope: ``open-intent-<data set>`` (``make open-intent``): the chosen score's test AUROC and
  ``max_prob``'s;
- peers: ``latency-banking77`` (``make bench``): the page comparing PyTorch and Optimum, its date and
  machine.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.lib.machine import int8_isa
from benchmarks.lib.results_history import newest

BEGIN = "<!-- results:begin"
END = "<!-- results:end -->"
HEADLINE = "frontier-banking77"
OUT_OF_SCOPE = {"banking77": "open-intent-banking77", "hwu64": "open-intent-hwu64"}
PEERS = "latency-banking77"
BASELINE = "max_prob"
NAMES = {"banking77": "Banking77", "hwu64": "HWU64"}
# How the README describes the frontier's rows (the Makefile's names); another name is shown as it is.
ROWS = {
    "6 layers": "6 layers (the default export)",
    "6 layers, exits 2+4 (frozen heads)": "6 layers, exits after layers 2 and 4 (frozen heads; an option)",
    "6 layers, exits 2+4 (joint heads)": "6 layers, exits after layers 2 and 4 (heads trained jointly; an option)",
    "4 layers": "4 layers (`--classifier-layers 4`)",
    "3 layers": "3 layers (`--classifier-layers 3`)",
}


def where(entry: dict) -> dict:
    cpu = entry["run"]["cpu"]
    return {
        "page": f"{entry['page']}.md",
        "date": entry["run"]["started_at"][:10],
        "machine": cpu.get("model"),
    }


def headline(entry: dict) -> tuple[dict, dict | None]:
    """The headline part and the PyTorch part of a frontier run."""
    doc, cpu = entry["result"], entry["run"]["cpu"]
    per_call = doc["settings"]["per_call"]
    rows = [{"name": name, "accuracy_lrsl": r["accuracy_lrsl"], "b1_p50_ms": r["b1_p50_ms"]["median"],
             "qps": r[f"qps_{per_call}"]["median"]} for name, r in doc["results"].items()]  # fmt: skip
    first = next(iter(doc["results"].values()))
    presets = {r.get("preset") for r in doc["results"].values()}
    part = {**where(entry), "isa": int8_isa(cpu)[0], "cpus": cpu.get("usable_cpus"),
            "rounds": doc["settings"]["rounds"], "per_call": per_call, "n": first["n"],
            "texts": f"{NAMES.get(entry['subject'], entry['subject'])} {Path(doc['texts']).stem}",
            "preset": presets.pop() if len(presets) == 1 else None, "rows": rows}  # fmt: skip
    pt = first.get("pytorch")
    pytorch = None if not pt else {**where(entry), "split": pt["split"],
                                   "accuracy_lrsl": pt["accuracy_lrsl"], "accuracy_classifier": pt["accuracy_classifier"]}  # fmt: skip
    return part, pytorch


def out_of_scope(entry: dict) -> dict:
    doc = entry["result"]
    chosen, scores = doc["chosen"], doc["scores"]
    return {**where(entry), "score": chosen, "test_auroc": scores[chosen]["test_auroc"],
            "baseline": BASELINE, "baseline_test_auroc": scores[BASELINE]["test_auroc"]}  # fmt: skip


def summarize(by_page: dict[str, list[dict]], old: dict, pages: list[str]) -> dict:
    """readme.json from the pages' histories; a part without a history keeps ``old``'s figures.
    ``pages``: the current pages' files, for the links to the other data sets' frontier pages."""
    s = {**old, "out_of_scope": dict(old.get("out_of_scope", {}))}
    s["other_frontiers"] = sorted(p for p in pages if p.startswith("frontier-") and p != f"{HEADLINE}.md")
    if by_page.get(HEADLINE):
        s["headline"], pytorch = headline(newest(by_page[HEADLINE]))
        if pytorch:
            s["pytorch"] = pytorch
    for dataset, stem in OUT_OF_SCOPE.items():
        if by_page.get(stem):
            s["out_of_scope"][dataset] = out_of_scope(newest(by_page[stem]))
    if by_page.get(PEERS):
        s["peers"] = where(newest(by_page[PEERS]))
    return s


def backs(s: dict) -> dict[str, list[str]]:
    """{page file: the README figures it backs}, for the results index."""
    out: dict[str, list[str]] = {}
    parts = [("headline", "the results table"), ("pytorch", "PyTorch's accuracy"), ("peers", "the PyTorch/Optimum comparison")]  # fmt: skip
    for key, what in parts:
        if key in s:
            out.setdefault(s[key]["page"], []).append(what)
    for dataset, part in s.get("out_of_scope", {}).items():
        out.setdefault(part["page"], []).append(f"the out-of-scope AUROCs ({NAMES.get(dataset, dataset)})")
    return out


def link(page: str) -> str:
    return f"[{Path(page).stem}](docs/results/{page})"


def render_block(s: dict) -> str:
    """The README's block, markers included, from readme.json's content."""
    h = s["headline"]
    lines = [
        f"{BEGIN}: generated by `make results` from docs/results/readme.json, which it rewrites from the "
        "newest run of each page linked here (a page from before the JSON history keeps the figures read "
        "off it); do not edit -->",
        f"| {h['texts']} ({h['n']:,} texts), int8 bundles, {h['cpus']} CPU cores | LRSL accuracy | batch-1 p50 "
        f"| q/s at {h['per_call']} per call |",
        "|---|---|---|---|",
        *(
            f"| {ROWS.get(r['name'], r['name'])} | {100 * r['accuracy_lrsl']:.2f} % | {r['b1_p50_ms']:.2f} ms "
            f"| {r['qps']:.0f} |"
            for r in h["rows"]
        ),  # fmt: skip
        "",
    ]
    preset = f", int8 preset `{h['preset']}`" if h.get("preset") else ""
    text = (f"{h['date']}, {h['cpus']}-vCPU {h['machine']} with {h['isa']}, `make frontier` ({h['rounds']} "
            f"alternating rounds{preset}): {link(h['page'])}")  # fmt: skip
    others = s.get("other_frontiers") or []
    text += f" (and {', '.join(map(link, others))})" if others else ""
    text += "; what exits cost and when they pay: [docs/guide/exits.md](docs/guide/exits.md)."
    if pt := s.get("pytorch"):
        text += (f" PyTorch's own LRSL accuracy on the first row's checkpoint is {100 * pt['accuracy_lrsl']:.2f} % "
                 f"(classifier alone {100 * pt['accuracy_classifier']:.2f} %; {pt['split']} split, "
                 f"{link(pt['page'])}).")  # fmt: skip
    if oos := s.get("out_of_scope"):
        parts = [(NAMES.get(d, d), p) for d, p in oos.items()]
        chosen = " and ".join(f"{p['test_auroc']:.3f} on {name} (`{p['score']}`)" for name, p in parts)
        base = " and ".join(f"{p['baseline_test_auroc']:.3f}" for _, p in parts)
        text += (f" Out-of-scope texts (`make open-intent`: a seeded quarter of the labels unknown): the score "
                 f"the export chose reaches a test AUROC of {chosen}, against {base} for the maximum softmax "
                 f"probability (`{BASELINE}`): {', '.join(link(p['page']) for _, p in parts)}.")  # fmt: skip
    if peers := s.get("peers"):
        other = " (another machine than the table's)" if peers["machine"] != h["machine"] else ""
        text += (f" The comparison with PyTorch and Optimum (`make bench`): {link(peers['page'])}, "
                 f"{peers['date']} on {peers['machine']}{other}.")  # fmt: skip
    text += " Figures differ by CPU: run the benchmarks on yours."
    return "\n".join([*lines, *wrap(text), END]) + "\n"


def wrap(text: str, width: int = 104) -> list[str]:
    """Words of ``text`` in lines of at most ``width`` characters (a longer word gets its own line)."""
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return out + ([line] if line else [])


def replace_block(readme: str, block: str, name: str = "README.md") -> str:
    """``readme`` with its block (from :data:`BEGIN` through :data:`END`) replaced by ``block``."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{name}: no results block ({BEGIN} ... {END}) to fill")
    return readme[:start] + block + readme[end + len(END) :].removeprefix("\n")
