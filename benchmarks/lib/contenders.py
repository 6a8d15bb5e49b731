"""The contenders of ``latency.py``: one class per way of classifying a text.

A contender has four steps, each a method (``measure.py`` times them):

- ``setup()``            import its libraries and set its thread count (timed as ``import_s``);
- ``load()``             load the model or bundle (timed as ``load_s``; a bundle's sha256 checks included);
- ``classify(texts)``    end to end for a batch: tokenization, model, argmax (and for the full LRSL path
                         the gate, the embedder on the hard samples and the fusion) -> :class:`Output`;
- ``encode(text)`` / ``run_encoded(inputs)``: the same for one text with tokenization done beforehand,
                         so that ``run_encoded`` times the model (and LRSL's gate/embedder/fusion) alone.

The PyTorch baseline and Optimum's model share the checkpoint's Hugging Face tokenizer; the lrsl_rt
contenders use the bundle's ``tokenizers`` file. All truncate to the bundle's max length.
The full LRSL path's stage times come from the Reranker's own ``on_run`` hook (``measure.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.lib.optimum_model import OPTIMUM_FILE

DESCRIPTIONS = {
    "pytorch_fp32": "PyTorch eager fp32 classifier (transformers), the baseline",
    "optimum_int8": "Optimum ORTModelForSequenceClassification, int8 dynamic (ORTQuantizer)",
    "lrsl_clf_int8": "lrsl_rt classifier only, int8 bundle (Reranker.logits + argmax)",
    "lrsl_clf_fp32": "lrsl_rt classifier only, fp32 bundle (Reranker.logits + argmax)",
    "lrsl_int8": "lrsl_rt full LRSL path, int8 bundle (Reranker.predict)",
    "lrsl_fp32": "lrsl_rt full LRSL path, fp32 bundle (Reranker.predict)",
    "lrsl_int8_shared": "lrsl_rt full LRSL path, int8 bundle, thread_pool='shared' (one pool for both models)",
    "lrsl_int8_noabstain": "lrsl_rt full LRSL path, int8 bundle, abstain=False (bundles that abstain)",
}


@dataclass
class Output:
    labels: list[str]
    classifier_labels: list[str] | None = None  # LRSL: the classifier's own answer
    hard: list[bool] | None = None  # LRSL: whether the embedder ran
    out_of_scope: list[bool] | None = None  # LRSL: whether the text was abstained on


# ---- the contenders ---------------------------------------------------------------------------
class PyTorchClassifier:
    """The baseline: transformers' AutoModelForSequenceClassification (eval mode, torch.inference_mode)."""

    def __init__(self, opts):
        self.dir = Path(opts.checkpoint) / "classifier"
        self.threads, self.max_length = opts.threads, opts.max_length
        self.providers = ["torch CPU"]

    def setup(self):
        import torch
        import transformers

        self.torch, self.transformers = torch, transformers
        torch.set_num_threads(self.threads)

    def load(self):
        self.tok = self.transformers.AutoTokenizer.from_pretrained(self.dir)
        self.model = self.transformers.AutoModelForSequenceClassification.from_pretrained(self.dir).eval()
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        attention = getattr(self.model.config, "_attn_implementation", None) or "default"
        self.providers = [f"torch CPU, {attention} attention"]

    def _tokenize(self, texts):
        return self.tok(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")

    def classify(self, texts):
        with self.torch.inference_mode():
            ids = self.model(**self._tokenize(texts)).logits.argmax(-1).tolist()
        return Output([self.labels[i] for i in ids])

    def encode(self, text):
        return self._tokenize([text])

    def run_encoded(self, inputs):
        with self.torch.inference_mode():
            return self.model(**inputs).logits


class OptimumClassifier(PyTorchClassifier):
    """Optimum's ORT model; its inputs go through the same HF tokenizer as the PyTorch baseline."""

    def __init__(self, opts):
        super().__init__(opts)
        self.model_dir, self.provider, self.spinning = Path(opts.optimum_dir), opts.provider, opts.spinning

    def setup(self):
        super().setup()
        import onnxruntime
        from optimum.onnxruntime import ORTModelForSequenceClassification

        self.ort, self.ort_model = onnxruntime, ORTModelForSequenceClassification

    def load(self):
        so = self.ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        if self.spinning != "default":  # else ONNX Runtime's default: spinning on
            spin = "1" if self.spinning == "on" else "0"
            so.add_session_config_entry("session.intra_op.allow_spinning", spin)
            so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        provider = "CUDAExecutionProvider" if self.provider == "cuda" else "CPUExecutionProvider"
        self.tok = self.transformers.AutoTokenizer.from_pretrained(self.dir)
        self.model = self.ort_model.from_pretrained(
            self.model_dir,
            file_name=OPTIMUM_FILE,
            session_options=so,
            provider=provider,
            use_io_binding=False,
        )
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.providers = list(self.model.providers)

    def classify(self, texts):
        logits = np.asarray(self.model(**self._tokenize(texts)).logits)
        return Output([self.labels[i] for i in logits.argmax(-1)])

    def run_encoded(self, inputs):
        return self.model(**inputs).logits


class LrslClassifier:
    """lrsl_rt with the gate off: ``Reranker.logits`` + argmax."""

    def __init__(self, opts, precision, thread_pool="session"):
        self.bundle = opts.bundle if precision == "int8" else opts.bundle_fp32
        self.opts, self.thread_pool = opts, thread_pool

    def setup(self):
        from lrsl_rt import Reranker
        from lrsl_rt.defaults import DEFAULT_BATCH_SIZE

        self.reranker_cls, self.batch_size = Reranker, DEFAULT_BATCH_SIZE

    def load(self):
        o = self.opts
        self.r = self.reranker_cls.from_bundle(
            self.bundle,
            providers=o.provider,
            threads=o.threads,
            # a call of b texts is split into length-sorted batches of the runtime's default size:
            # that bucketing is part of what is measured (the baselines run one padded batch of b)
            batch_size=self.batch_size,
            # None: the runtime's default (see lrsl_rt.session: spinning during runs only in a
            # session's own pool; the shared pool always spins)
            spinning=None
            if self.thread_pool == "shared"
            else {"default": None, "on": True, "off": False}[o.spinning],
            thread_pool=self.thread_pool,
        )
        self.labels = list(self.r.labels)
        self.providers = self.r.classifier.providers

    def classify(self, texts):
        return Output([self.labels[i] for i in self.r.logits(texts).argmax(1)])

    def encode(self, text):
        return self.r.tokenizer([text])

    def run_encoded(self, inputs):
        return self.r.classifier.run(inputs)


class LrslFull(LrslClassifier):
    """The full LRSL path: ``Reranker.predict`` (gate, embedder on hard samples, fusion, and abstain
    when the bundle abstains; ``abstain=False`` turns it off). The stage table comes from the
    Reranker's own ``on_run`` hook on the timed calls (``measure.py``)."""

    def __init__(self, opts, precision, thread_pool="session", abstain=None):
        super().__init__(opts, precision, thread_pool)
        self.abstain = abstain

    def classify(self, texts):
        preds = self.r.predict(texts, abstain=self.abstain)
        return Output(
            [p.label for p in preds],
            [p.classifier_label for p in preds],
            [p.hard for p in preds],
            [bool(p.out_of_scope) for p in preds],
        )

    def encode(self, text):
        return self.r.tokenizer.tokenize([text])

    def run_encoded(self, rows):
        return self.r.predict_tokens(rows, abstain=self.abstain)


CONTENDERS = {
    "pytorch_fp32": PyTorchClassifier,
    "optimum_int8": OptimumClassifier,
    "lrsl_clf_int8": lambda o: LrslClassifier(o, "int8"),
    "lrsl_clf_fp32": lambda o: LrslClassifier(o, "fp32"),
    "lrsl_int8": lambda o: LrslFull(o, "int8"),
    "lrsl_fp32": lambda o: LrslFull(o, "fp32"),
    "lrsl_int8_shared": lambda o: LrslFull(o, "int8", thread_pool="shared"),
    "lrsl_int8_noabstain": lambda o: LrslFull(o, "int8", abstain=False),
}
