"""The Reranker: classifier, variance gate, embedder on the hard samples only, fusion.

``Reranker.from_bundle(dir)`` loads a bundle strictly (manifest and checksums, :mod:`lrsl_rt.manifest`;
label embeddings and graph shapes, :mod:`lrsl_rt.bundle`) and then, for a list of texts:

1. tokenizes them once, truncated to the manifest's max length;
2. runs the classifier in batches of texts of similar length (sorted by token count, so little
   padding), putting the logits back in input order; a bundle with exits runs its stage chain
   (:mod:`lrsl_rt.exits`) instead, where sure rows leave early and are never hard;
3. marks the hard samples with :func:`lrsl_rt.gate.is_hard` (flat top-k logits);
4. runs the embedder on the hard samples only (and on the rows an abstain score needs embedded,
   :mod:`lrsl_rt.abstain_step`), takes their cosine similarity with the label embeddings and reranks
   them with :func:`lrsl_rt.fusion.fuse` (a decoder-only classifier's embedder has its own tokenizer).

Batching is deterministic (chunks of ``chunk_size``, length-sorted batches of at most ``batch_size``,
:mod:`.batches`, docs/batching.md): the same list and settings give bit-identical results, and
``predict``, ``predict_iter``, ``logits``, ``embed`` and ``similarities`` batch the same way.

The Reranker holds no mutable state after loading: one instance can serve many threads
(ONNX Runtime's ``run`` is thread-safe, the tokenizer is never reconfigured).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np

from .abstain_step import AbstainStep
from .arrays import BatchedArrays
from .batches import length_batches
from .bundle import (
    FEATURES,
    load_abstain_arrays,
    load_label_embeddings,
    open_model,
    open_stages,
    open_tokenizers,
    recorded_batch_size,
)
from .defaults import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE, MODEL_ROLES
from .errors import BundleError, InputError, UsageError
from .exits import StageChain
from .gate import is_unsure, sureness
from .manifest import Manifest, read_manifest, resolve_file
from .prediction import Prediction, build_predictions, record_scores
from .rows import check_chunk_size, check_texts
from .rule import decide, explain_rows
from .session import OnnxSession, check_thread_count
from .tokenize import BundleTokenizer, Tokens


class Reranker(BatchedArrays):
    """LRSL over two ONNX Runtime sessions; build it with :meth:`from_bundle`.

    With the Banking77 bundle of ``make bundle`` (skipped as a doctest: it needs that bundle):

    >>> r = Reranker.from_bundle("artifacts/banking77/bundle", threads=2)  # doctest: +SKIP
    >>> p = r.predict(["I still have not received my card"])[0]  # doctest: +SKIP
    >>> p.label, p.hard, p.reranked  # doctest: +SKIP
    ('card_arrival', False, False)

    The constructor takes parts already loaded (tests use it to swap a threshold or wrap a session).
    ``classifier`` is one session, or the :class:`~lrsl_rt.exits.StageChain` of a bundle with exits.
    ``on_run``, when set, is called as ``on_run(stage, seconds)`` after each step of a call, a stage of
    :data:`lrsl_rt.defaults.STAGES`: each ONNX Runtime run (``classifier``, ``embedder``; padding
    excluded), the tokenization of ``predict``, the rule (``rule``: gate and fusion) and the abstain
    score (``abstain``). A server's per-stage metrics and the latency benchmark's stage table come from it.
    """

    def __init__(
        self,
        manifest: Manifest,
        tokenizer: BundleTokenizer,
        classifier: OnnxSession | StageChain,
        embedder: OnnxSession,
        label_embeddings: np.ndarray,
        batch_size: int = DEFAULT_BATCH_SIZE,
        bundle_dir: str | os.PathLike | None = None,
        train_embeddings: np.ndarray | None = None,
        on_run: Callable[[str, float], None] | None = None,
        feature_stats: tuple[np.ndarray, np.ndarray] | None = None,
        embedder_tokenizer: BundleTokenizer | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.manifest = manifest
        self.tokenizer = tokenizer
        # the embedder's own tokenizer beside a decoder-only classifier; else the classifier's
        self.embedder_tokenizer = embedder_tokenizer or tokenizer
        self.classifier = classifier
        self.embedder = embedder
        self.batch_size = batch_size
        self.bundle_dir = Path(bundle_dir) if bundle_dir is not None else None
        self.on_run = on_run
        want = (len(manifest.labels), manifest.embedding_dim)
        if label_embeddings.shape != want:
            raise BundleError(
                f"label embeddings have shape {label_embeddings.shape}, the manifest expects {want}"
            )
        self._label_embeddings_t = np.ascontiguousarray(label_embeddings.T, dtype=np.float32)
        self._label_embeddings_t.flags.writeable = False
        self.train_embeddings = train_embeddings  # (n, d) unit rows: the kNN abstain score's neighbours
        self.feature_stats = feature_stats  # (whitener, whitened class means): the mahalanobis score's
        self._abstain = None
        if manifest.abstain is not None:
            whitener, means = feature_stats if feature_stats is not None else (None, None)
            self._abstain = AbstainStep(
                manifest.abstain,
                manifest.k,
                train_embeddings=train_embeddings,
                whitener=whitener,
                feature_means=means,
            )

    @classmethod
    def from_bundle(
        cls,
        path: str | os.PathLike,
        providers: str | list = "cpu",
        threads: int | None = None,
        batch_size: int | None = None,
        verify: bool = True,
        spinning: bool | None = None,
        *,
        thread_pool: str = "session",
        session_options: dict | None = None,
    ) -> Reranker:
        """Load and validate a bundle directory; ``verify`` checks each file's size and sha256.

        ``providers``, ``threads``, ``spinning`` and ``thread_pool`` configure both ONNX Runtime
        sessions, as described in :mod:`lrsl_rt.session` (defaults: each model its own threads,
        spinning during its runs only; ``thread_pool="shared"`` is for processes that run only
        lrsl-rt). ``session_options`` passes the session's other settings (``graph_optimization``),
        e.g. for benchmarks. ``batch_size`` None: the batch size the export evaluated the bundle with
        (its manifest), so predictions reproduce the export's report; DEFAULT_BATCH_SIZE for a bundle
        that records none.
        """
        check_thread_count("threads", threads)  # before the checksums: a typo fails at once
        bundle_dir = Path(path)
        manifest = read_manifest(bundle_dir)
        if batch_size is None:
            batch_size = recorded_batch_size(manifest)
        files = {role: resolve_file(bundle_dir, role, e, verify=verify) for role, e in manifest.files.items()}
        label_embeddings = load_label_embeddings(files["label_embeddings"], manifest)
        tokenizer, embedder_tokenizer = open_tokenizers(files, manifest)
        settings = dict(
            providers=providers,
            threads=threads,
            spinning=spinning,
            thread_pool=thread_pool,
            **(session_options or {}),
        )
        if manifest.exits:
            classifier = open_stages(files, manifest, tokenizer, **settings)
        else:
            classifier = open_model(files["classifier"], "classifier", manifest, tokenizer, **settings)
        train_embeddings, feature_stats = load_abstain_arrays(files, manifest, classifier)
        return cls(
            manifest,
            tokenizer,
            classifier,
            open_model(files["embedder"], "embedder", manifest, embedder_tokenizer, **settings),
            label_embeddings,
            batch_size=batch_size,
            bundle_dir=bundle_dir,
            train_embeddings=train_embeddings,
            feature_stats=feature_stats,
            embedder_tokenizer=embedder_tokenizer,
        )

    def replace(
        self,
        *,
        manifest: Manifest | None = None,
        label_embeddings: np.ndarray | None = None,
        train_embeddings: np.ndarray | None = None,
        feature_stats: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Reranker:
        """A Reranker on the same sessions, tokenizer, ``batch_size`` and ``on_run`` with the parts named
        swapped (None keeps one): ``r.replace(manifest=dataclasses.replace(r.manifest, threshold=0.5))``
        changes a setting without loading the models again. The manifest must fit the sessions: their
        label count and embedding width, and exits exactly when the classifier is a stage chain."""
        manifest = manifest or self.manifest
        if bool(manifest.exits) != isinstance(self.classifier, StageChain):
            raise UsageError("a manifest with exits needs a stage chain, one without a single classifier")
        return type(self)(
            manifest,
            self.tokenizer,
            self.classifier,
            self.embedder,
            self.label_embeddings if label_embeddings is None else label_embeddings,
            batch_size=self.batch_size,
            bundle_dir=self.bundle_dir,
            train_embeddings=self.train_embeddings if train_embeddings is None else train_embeddings,
            on_run=self.on_run,
            feature_stats=self.feature_stats if feature_stats is None else feature_stats,
            embedder_tokenizer=self.embedder_tokenizer,
        )

    # ---- the bundle's settings ------------------------------------------------------------------
    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    @property
    def threshold(self) -> float:
        return self.manifest.threshold

    @property
    def fusion(self):
        return self.manifest.fusion

    @property
    def k(self) -> int:
        return self.manifest.k

    @property
    def label_embeddings(self) -> np.ndarray:
        """Read-only float32 (L, d) label embeddings."""
        return self._label_embeddings_t.T

    # ---- predictions ----------------------------------------------------------------------------
    def predict(
        self,
        texts: list[str],
        explain: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        abstain: bool | None = None,
    ) -> list[Prediction]:
        """One Prediction per text, in input order; an empty list gives an empty list.

        ``abstain``: None follows the bundle (on when its manifest has an ``abstain`` section),
        False gives every text one of the labels, True asks for the bundle's abstain decision.
        """
        texts = check_texts(texts)
        return list(self.predict_iter(texts, explain=explain, chunk_size=chunk_size, abstain=abstain))

    def predict_iter(
        self,
        texts: Iterable[str],
        explain: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        abstain: bool | None = None,
    ) -> Iterator[Prediction]:
        """Stream predictions in input order, holding at most ``chunk_size`` texts at a time."""
        if isinstance(texts, str):
            raise InputError("expected an iterable of texts, got a single string; wrap it in a list")
        check_chunk_size(chunk_size)
        abstain = self.abstains(abstain)
        it, offset = iter(texts), 0
        while chunk := list(islice(it, chunk_size)):
            check_texts(chunk, offset)
            offset += len(chunk)
            t0 = time.perf_counter()
            rows = self.tokenizer.tokenize(chunk)
            self._timed("tokenize", t0)
            yield from self._predict_chunk(rows, explain, abstain)

    def abstains(self, asked: bool | None = None) -> bool:
        """Whether predictions abstain: the bundle's choice unless ``asked`` says otherwise."""
        if asked is None:
            return self.manifest.abstain is not None
        if asked and self.manifest.abstain is None:
            raise UsageError(
                "this bundle has no abstain calibration (export a checkpoint trained with --oos-label "
                "or --unknown-ratio); predict without abstaining"
            )
        return bool(asked)

    def record_fields(self, abstain: bool | None = None) -> tuple[str, ...]:
        """The optional record fields predictions carry: ``exit_layer`` with exits, ``out_of_scope``
        when abstaining (:data:`lrsl_rt.prediction.OPTIONAL_FIELDS`)."""
        exits = ("exit_layer",) if self.manifest.exits else ()
        return exits + (("out_of_scope",) if self.abstains(abstain) else ())

    def predict_tokens(
        self, rows: list[Tokens], explain: bool = False, abstain: bool | None = None
    ) -> list[Prediction]:
        """One Prediction per row of ``self.tokenizer.tokenize(texts)``, as ``predict(texts)`` gives in one chunk.

        For callers that tokenize ahead of the model call: a server counts each request's tokens (for
        its batch budget) off its event loop and hands the same rows to the batch, so no text is
        tokenized twice.
        """
        return self._predict_chunk(list(rows), explain, self.abstains(abstain))

    def _predict_chunk(self, rows: list[Tokens], explain: bool, abstain: bool = False) -> list[Prediction]:
        step = self._abstain if abstain else None
        logits, exit_layer, features = self._classify(rows, features=step is not None and step.needs_features)
        settled = None if exit_layer is None else exit_layer < self.manifest.classifier_layers
        m = self.manifest
        hard = is_unsure(sureness(logits, m.measure, self.k), self.threshold)
        if settled is not None:
            hard &= ~settled
        t_scored = time.perf_counter()
        scored = step.scored_rows(logits, features) if step is not None else None
        t_scored = time.perf_counter() - t_scored
        # one embedder run for the gate's hard rows and the rows the abstain score needs embedded
        embed = hard | scored if step is not None and step.needs_embeddings else hard
        emb, cos, pos = self._embed_rows(rows, embed)
        t0 = time.perf_counter()
        d = decide(logits, lambda idx: cos[pos[idx]], None, self.fusion, self.k, measure=m.measure, hard=hard)
        self._timed("rule", t0)
        n, labels = len(rows), self.labels
        classifier_prob, scores, fused_scores = record_scores(logits, d)
        explanations = explain_rows(logits, d, labels, self.k, self.threshold) if explain else [None] * n
        oos = None
        if step is not None:
            t0 = time.perf_counter() - t_scored  # the abstain stage: the cascade's rows, then the score
            sub = pos[scored] if step.needs_embeddings else None
            parts = dict(features=features) if sub is None else dict(emb=emb[sub], cos=cos[sub])
            oos = step.out_of_scope(logits, d, scores, scored, **parts)
            self._timed("abstain", t0)
        fallback = self.manifest.abstain.fallback_label if abstain else None
        return build_predictions(
            labels, d, (classifier_prob, scores, fused_scores), explanations, exit_layer, oos, fallback
        )

    def _embed_rows(self, rows: list[Tokens], mask: np.ndarray):
        """(embeddings, label similarities, position of each row in them or -1) of the rows in ``mask``."""
        idx = np.flatnonzero(mask)
        pos = np.full(len(rows), -1)
        pos[idx] = np.arange(idx.size)
        emb = self.run_batched("embedder", [rows[i] for i in idx]) if idx.size else None
        emb = np.zeros((0, self.manifest.embedding_dim), np.float32) if emb is None else emb
        return emb, emb @ self._label_embeddings_t, pos

    def _classify(self, rows: list[Tokens], features: bool = False):
        """(logits (n, L), layer at which each row's logits were taken or None without exits,
        the graph's ``features`` (n, h) when asked for, else None)."""
        if not isinstance(self.classifier, StageChain):
            if features:
                logits, feats = self.run_batched("classifier", rows, outputs=("logits", FEATURES))
                return logits, None, feats
            return self.run_batched("classifier", rows), None, None
        m, run = self.manifest, self.classifier.run
        return (*run(rows, self.batch_size, m.exits, m.measure, m.k, on_run=self.on_run), None)

    # ---- batching -------------------------------------------------------------------------------
    def run_batched(self, role: str, rows: list[Tokens], outputs: tuple[str, ...] | None = None):
        """Run the ``"classifier"`` or the ``"embedder"`` on tokenized rows (``self.tokenizer.tokenize``)
        in length-sorted batches of at most ``batch_size`` (:func:`~lrsl_rt.batches.length_batches`), as
        ``predict`` does; float32 outputs in input order. ``outputs``: graph outputs to return, as a
        tuple of arrays (default: the session's one output, as an array)."""
        if role not in MODEL_ROLES:
            raise UsageError(f"role must be one of {MODEL_ROLES}, got {role!r}")
        session = self.classifier if role == "classifier" else self.embedder
        if isinstance(session, StageChain):  # the final head's logits: no row leaves early
            return session.full_logits(rows, self.batch_size, self.k)
        tokenizer = self.tokenizer if role == "classifier" else self.embedder_tokenizer
        rows = rows if tokenizer is self.tokenizer else tokenizer.retokenize(rows)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # stable: ties keep input order
        out = None
        for start, end in length_batches([len(rows[i]) for i in order], self.batch_size):
            idx = order[start:end]
            inputs = tokenizer.feeds([rows[i] for i in idx])
            t0 = time.perf_counter()
            ys = session.run_outputs(inputs, outputs) if outputs else [session.run(inputs)]
            self._timed(role, t0)
            ys = [np.asarray(y, dtype=np.float32) for y in ys]
            if out is None:
                out = [np.empty((len(rows), *y.shape[1:]), dtype=np.float32) for y in ys]
            for o, y in zip(out, ys, strict=True):
                o[idx] = y
        if out is None:  # no rows
            return None
        return tuple(out) if outputs else out[0]

    def _timed(self, stage: str, t0: float) -> None:
        """Report ``stage``'s time since ``t0`` to the ``on_run`` hook, when one is set."""
        if self.on_run is not None:
            self.on_run(stage, time.perf_counter() - t0)

    def __repr__(self) -> str:
        return (
            f"Reranker({str(self.bundle_dir)!r}, labels={len(self.labels)}, k={self.k}, "
            f"threshold={self.threshold:.4g}, fusion={self.fusion.name!r}, precision={self.manifest.precision!r})"
        )
