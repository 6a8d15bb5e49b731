"""The PyTorch side of the export: load both models, and measure what the bundle is compared with.

:func:`pytorch_reference` runs the PyTorch models and the ONNX fp32 graphs on the very same encoded
batches (Hugging Face tokenizer, ``max_length`` of lrsl.json, padded to the longest text of each
batch) and returns

- ``parity``: max abs difference PyTorch vs ONNX fp32 of the dev logits and embeddings, checked
  against explicit tolerances (:func:`export.evaluate.check_parity` raises ParityError);
- the ONNX fp32 logits/embeddings that the shipped (int8/fp16) graphs are later compared with;
- ``pytorch``: the LRSL report of the PyTorch models on the gate's split (test, or dev without one),
  with the threshold and fusion of lrsl.json -- independent of what training wrote to metrics.json.
  Only the hard samples go through the embedder, as in the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lrsl_rt.defaults import MODEL_ROLES
from lrsl_rt.session import OnnxSession

from . import onnx_export as ox
from .evaluate import check_parity, lrsl_reference
from .source import Checkpoint


def load_torch_models(ckpt: Checkpoint):
    """({role: HF tokenizer}, {"classifier": graph, "embedder": EmbedderGraph}).

    One tokenizer for both, both graphs taking the same inputs; beside a decoder-only classifier
    the embedder has its own tokenizer (:attr:`export.source.Checkpoint.embedder_tokenizer_file`)
    and takes its own inputs."""
    from .errors import ExportError

    tok = ox.load_tokenizer(ckpt.classifier_dir)
    own = ckpt.embedder_tokenizer_file is not None
    toks = {"classifier": tok, "embedder": ox.load_tokenizer(ckpt.embedder_dir) if own else tok}
    models = {
        "classifier": ox.load_classifier(ckpt.classifier_dir, ckpt.info.labels, tok, ckpt.classifier_kind),
        "embedder": ox.load_embedder(ckpt.embedder_dir, toks["embedder"]),
    }
    a, b = (m.input_names for m in models.values())
    if a != b and not own:
        raise ExportError(
            f"the classifier takes {list(a)} but the embedder takes {list(b)}; both must take the same"
        )
    return toks, models


@dataclass
class Reference:
    parity: dict
    pytorch: dict  # lrsl_report of the PyTorch models on the gate's split
    dev_logits_fp32: np.ndarray
    dev_emb_fp32: np.ndarray
    test_logits_fp32: np.ndarray | None

    @property
    def embedding_dim(self) -> int:
        return int(self.dev_emb_fp32.shape[1])


def pytorch_reference(
    ckpt: Checkpoint, models: dict, toks: dict, fp32: dict, batch_size: int, threads, atol: dict
) -> Reference:
    """``toks``: each role's HF tokenizer (:func:`load_torch_models`)."""
    info, dev, test, ev = ckpt.info, ckpt.dev, ckpt.test, ckpt.eval_split
    sessions = {role: OnnxSession(fp32[role], providers="cpu", threads=threads) for role in MODEL_ROLES}

    def torch_only(role, texts):
        return ox.torch_outputs(models[role], toks[role], texts, info.max_length, batch_size)

    def both(role, texts):
        pt, batches = torch_only(role, texts)
        return pt, ox.run_batches(sessions[role].run, batches)

    dev_logits_pt, dev_logits_fp32 = both("classifier", dev.texts)
    dev_emb_pt, dev_emb_fp32 = both("embedder", dev.texts)
    n = len(dev.texts)
    parity = {
        "split": "dev",
        "n": n,
        "logits_max_abs_diff": check_parity(
            dev_logits_pt, dev_logits_fp32, atol["logits"], f"classifier logits on dev (n={n})"
        ),
        "logits_atol": atol["logits"],
        "embeddings_max_abs_diff": check_parity(
            dev_emb_pt, dev_emb_fp32, atol["embeddings"], f"embeddings on dev (n={n})"
        ),
        "embeddings_atol": atol["embeddings"],
    }
    test_logits_fp32 = None
    eval_logits, eval_emb = dev_logits_pt, dev_emb_pt
    if test is not None:
        eval_logits, test_logits_fp32 = both("classifier", test.texts)
        eval_emb = None
    label_emb, _ = torch_only("embedder", list(info.label_texts))

    def cos_of(idx):
        rows = (
            eval_emb[idx] if eval_emb is not None else torch_only("embedder", [ev.texts[i] for i in idx])[0]
        )
        return rows @ label_emb.T

    pytorch = lrsl_reference(
        eval_logits, ev.gold, info.k, info.threshold, info.fusion_rule, cos_of, info.measure
    )
    return Reference(parity, pytorch, dev_logits_fp32, dev_emb_fp32, test_logits_fp32)
