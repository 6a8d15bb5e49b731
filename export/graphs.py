"""The model steps of the export: ONNX fp32 graphs, their fusions, the PyTorch reference, the shipped precision.

torch and transformers are imported inside the steps that need them, once the checkpoint has been read.
"""

from __future__ import annotations

from pathlib import Path

from lrsl_rt.defaults import MODEL_ROLES

from .bundle import LABEL_EMBEDDINGS, TOKENIZER
from .errors import ExportError
from .optimize import convert, graph_summary, model_file_name, optimize_graph
from .settings import Settings


def export_graphs(ckpt, work: Path, log, features: bool = False):
    """({role: HF tokenizer}, the two traced PyTorch models, {role: raw ONNX fp32 path}); ``features``: the
    classifier graph gets a second output, the ``features`` of the mahalanobis abstain score."""
    from . import onnx_export as ox  # torch and transformers: only once the checkpoint looks right
    from .reference import load_torch_models

    toks, torch_models = load_torch_models(ckpt)
    raw = {role: work / f"{role}_raw.onnx" for role in MODEL_ROLES}
    clf = torch_models["classifier"]
    graphs = {"classifier": (clf, "logits"), "embedder": (torch_models["embedder"], "embeddings")}
    if features:
        graphs["classifier"] = (
            ox.ClassifierFeaturesGraph(clf.model, clf.input_names),
            ("logits", "features"),
        )
    for role, (graph, output) in graphs.items():
        ox.export_onnx(graph, toks[role], raw[role], output, ckpt.info.max_length)
    log(f"      inputs {list(torch_models['classifier'].input_names)}")
    return toks, torch_models, raw


def optimize_graphs(torch_models, raw: dict, work: Path, s: Settings, log):
    """({role: fp32 graph to ship or convert}, {role: the fusions applied}); raw graphs when skipped."""
    fp32, fused = dict(raw), {role: {} for role in raw}
    for role in raw if s.optimize else ():
        fp32[role] = work / f"{role}_fp32.onnx"
        config = torch_models[
            role if role in MODEL_ROLES else "classifier"
        ].model.config  # a stage: its model's
        fused[role] = optimize_graph(raw[role], fp32[role], config, use_gpu=s.precision == "fp16")
        log(f"      {role}: fused {fused[role] or 'nothing'}")
    return fp32, fused


def reference(ckpt, torch_models, toks: dict, fp32: dict, s: Settings, log):
    """The PyTorch reference (:mod:`export.reference`), its parity with ONNX fp32 logged."""
    from .reference import pytorch_reference

    ref = pytorch_reference(ckpt, torch_models, toks, fp32, s.batch_size, s.threads, s.atol)
    par = ref.parity
    log(
        f"      max |PyTorch - ONNX fp32| on dev: logits {par['logits_max_abs_diff']:.2e} (atol "
        f"{par['logits_atol']:g}), embeddings {par['embeddings_max_abs_diff']:.2e} (atol {par['embeddings_atol']:g})"
    )
    return ref


def convert_graphs(stage: Path, raw: dict, fp32: dict, fused: dict, s: Settings, log, feeds=None):
    """({file role: name in the bundle}, {model role: graph summary}) after converting both models
    (the stage graphs in place of the classifier when there are some); ``feeds``: tokenized
    calibration texts for the static int8 presets, {model role: feeds} (each model tokenizes them itself)."""
    from .stages import stage_feeds

    roles = [role for role in fp32 if role != "classifier" or len(fp32) == len(MODEL_ROLES)]
    stages = [role for role in roles if role not in MODEL_ROLES]
    role_feeds = {role: (feeds or {}).get(role) for role in MODEL_ROLES}
    if stages:
        role_feeds.update(stage_feeds({role: fp32[role] for role in stages}, role_feeds["classifier"]))
    files = {role: model_file_name(role, s.precision, s.preset) for role in roles}
    graphs = {}
    for role in roles:
        shipped = convert(fp32[role], stage / files[role], s.precision, s.preset, role_feeds[role])
        g = graphs[role] = graph_summary(raw[role], shipped, fused[role])
        if s.precision == "int8" and g["quantized_linear"] == 0:
            raise ExportError(f"{shipped.name}: int8 quantization left no quantized MatMul in the {role}")
        int8 = (
            f", {g['quantized_linear']}/{g['linear_layers']} linear layers int8"
            if s.precision == "int8"
            else ""
        )
        log(f"      {shipped.name}: {g['size'] / 2**20:.1f} MiB, {g['nodes']} nodes{int8}")
    files["tokenizer"] = TOKENIZER
    files["label_embeddings"] = LABEL_EMBEDDINGS
    return files, graphs
