"""Loading the arrays and graphs of a bundle and checking them against its manifest.

:mod:`lrsl_rt.manifest` checks the manifest itself and each file's path, size and sha256; this module
checks what is inside the files, each failure a ``BundleError`` naming the file, what the manifest
expects and what was found:

- ``label_embeddings.npy``: loaded with ``allow_pickle=False``; float32, shape
  ``(len(labels), embedding_dim)``, finite, unit rows (within 1e-2);
- each ONNX graph: exactly the inputs its tokenizer section of the manifest lists
  (``model_input_names``, among ``input_ids``, ``attention_mask``, ``token_type_ids``); a rank-2 output
  whose width, when the graph declares it, is ``len(labels)`` (classifier) or ``embedding_dim``
  (embedder); then one probe text is run, which checks the width of graphs with symbolic shapes and
  warms the session up. The embedder's probe output must have unit length. A second probe of
  ``tokenizer.max_length`` tokens checks that the graph accepts the longest input the tokenizer makes
  (a position table shorter than the manifest's max length fails here, not on the first long text).

A graph with several outputs is read at ``logits`` (classifier) or ``sentence_embedding`` /
``embeddings`` (embedder); a graph with one output is read at that output.

A bundle with exits has stage graphs in place of the classifier (:mod:`lrsl_rt.exits`):
:func:`open_stages` checks each stage's inputs and outputs (stage 1 the token inputs, the others
``hidden_states`` and ``attention_mask``; ``logits``, and ``hidden_out`` on all but the last) and
runs the probe text and the ``max_length`` probe through the whole chain.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .defaults import DEFAULT_BATCH_SIZE
from .errors import BundleError, RuntimeBackendError
from .manifest import EMBEDDER_TOKENIZER_ROLE, TRAIN_EMBEDDINGS_ROLE, Manifest
from .session import OnnxSession
from .tokenize import INPUT_NAMES, BundleTokenizer, Tokens

PROBE_TEXT = "label"
OUTPUTS = {"classifier": ("logits",), "embedder": ("sentence_embedding", "embeddings")}


def open_model(
    path: str | os.PathLike, role: str, manifest: Manifest, tokenizer: BundleTokenizer, **settings
) -> OnnxSession:
    """An ONNX Runtime session for the bundle's ``classifier`` or ``embedder``, checked by a probe run.

    ``settings`` go to :class:`~lrsl_rt.session.OnnxSession` (providers, threads, spinning, ...).
    """
    width = len(manifest.labels) if role == "classifier" else manifest.embedding_dim
    session = OnnxSession(path, output=OUTPUTS[role], **settings)
    check_inputs(session, role, tokenizer, manifest)
    check_graph(session, role, width, tokenizer.feeds(tokenizer.tokenize([PROBE_TEXT])))
    check_max_length(session, role, tokenizer)
    return session


def open_tokenizers(files: dict, manifest: Manifest) -> tuple[BundleTokenizer, BundleTokenizer]:
    """(the classifier's tokenizer, the embedder's): the same one unless the manifest has an
    ``embedder_tokenizer`` section (beside a decoder-only classifier)."""
    tokenizer = BundleTokenizer(files["tokenizer"], manifest.tokenizer)
    if manifest.embedder_tokenizer is None:
        return tokenizer, tokenizer
    return tokenizer, BundleTokenizer(files[EMBEDDER_TOKENIZER_ROLE], manifest.embedder_tokenizer)


def check_inputs(session: OnnxSession, role: str, tokenizer: BundleTokenizer, manifest: Manifest) -> None:
    """The graph takes exactly the inputs its tokenizer section of the manifest lists (the runtime
    feeds those and no others)."""
    listed = tuple(tokenizer.settings.model_input_names)
    if sorted(session.input_names) != sorted(listed):
        key = "embedder_tokenizer" if role == "embedder" and manifest.embedder_tokenizer else "tokenizer"
        raise BundleError(
            f"{session.path}: the {role} graph takes inputs {session.input_names}, but the manifest's "
            f"{key}.model_input_names lists {list(listed)}"
        )


def open_stages(files: dict, manifest: Manifest, tokenizer: BundleTokenizer, **settings):
    """The :class:`~lrsl_rt.exits.StageChain` of a bundle with exits, each stage graph checked."""
    from .exits import HIDDEN_IN, HIDDEN_OUT, LOGITS, MASK, StageChain

    roles = manifest.stage_roles
    sessions = []
    for i, role in enumerate(roles):
        session = OnnxSession(files[role], output=LOGITS, **settings)
        first, names = i == 0, session.input_names
        if first:
            inputs_ok, want_in = "input_ids" in names and set(names) <= set(INPUT_NAMES), INPUT_NAMES
        else:
            inputs_ok, want_in = sorted(names) == sorted((HIDDEN_IN, MASK)), (HIDDEN_IN, MASK)
        want_out = [LOGITS] if i == len(roles) - 1 else [LOGITS, HIDDEN_OUT]
        if not inputs_ok or sorted(session.outputs) != sorted(want_out):
            raise BundleError(
                f"{session.path}: {role} must take inputs {list(want_in)} and give {want_out}, "
                f"got inputs {names} and outputs {list(session.outputs)}"
            )
        sessions.append(session)
    chain = StageChain(sessions, tokenizer.pad, manifest.classifier_layers)
    width, k = len(manifest.labels), manifest.k
    y = chain.full_logits(tokenizer.tokenize([PROBE_TEXT]), 1, k)
    if y.shape != (1, width) or not np.isfinite(y).all():
        raise BundleError(
            f"{chain.path}: the stage chain gives logits of shape {y.shape} for one text, expected finite "
            f"(1, {width}) (len(labels) in the manifest)"
        )
    try:
        chain.full_logits([_longest_row(tokenizer)], 1, k)
    except RuntimeBackendError as e:
        raise BundleError(
            f"{chain.path}: the stage chain fails on an input of {tokenizer.max_length} tokens, the "
            f"manifest's tokenizer.max_length ({e})"
        ) from e
    return chain


def recorded_batch_size(manifest: Manifest) -> int:
    """The batch size the export evaluated the bundle with; DEFAULT_BATCH_SIZE when it records none."""
    recorded = manifest.metrics.get("export_settings", {}).get("batch_size")
    ok = isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0
    return recorded if ok else DEFAULT_BATCH_SIZE


def load_label_embeddings(path: Path, manifest: Manifest) -> np.ndarray:
    """float32 (len(labels), embedding_dim) array with unit rows, loaded without pickle."""
    return load_unit_rows(path, len(manifest.labels), manifest.embedding_dim, "labels")


def load_train_embeddings(path: Path, manifest: Manifest) -> np.ndarray:
    """float32 (n, embedding_dim) unit embeddings of training texts (the kNN abstain score)."""
    return load_unit_rows(path, None, manifest.embedding_dim, "training texts")


def load_unit_rows(path: Path, n_rows: int | None, dim: int, rows_are: str) -> np.ndarray:
    """float32 (n_rows, dim) array with unit rows (any positive row count when None), without pickle."""
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:  # object arrays need pickle: refused
        raise BundleError(f"{path}: cannot load without pickle ({e}); expected a float32 .npy array") from e
    except OSError as e:
        raise BundleError(f"{path}: not a valid .npy file: {e}") from e
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
        raise BundleError(f"{path}: expected dtype float32, got {getattr(arr, 'dtype', type(arr).__name__)}")
    want = (arr.shape[0] if n_rows is None and arr.ndim == 2 and arr.shape[0] else n_rows, dim)
    if arr.shape != want:
        raise BundleError(
            f"{path}: expected shape ({n_rows or 'n'}, {dim}) ({rows_are}, embedding_dim from the manifest), got {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise BundleError(f"{path}: contains NaN or infinite values")
    norms = np.linalg.norm(arr, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-2):
        raise BundleError(
            f"{path}: rows must have unit length, got norms from {norms.min():.4f} to {norms.max():.4f}"
        )
    return arr


def check_graph(session: OnnxSession, role: str, width: int, probe: dict) -> None:
    """The graph takes our inputs and returns (n, width); static shapes are read, then one probe run."""
    name = session.path
    unknown = [i for i in session.input_names if i not in INPUT_NAMES]
    if unknown or "input_ids" not in session.input_names:
        raise BundleError(
            f"{name}: {role} graph inputs must be among {list(INPUT_NAMES)} with input_ids, got {session.input_names}"
        )
    what = "len(labels)" if role == "classifier" else "embedding_dim"
    shape = session.output_shape()
    if len(shape) != 2:
        raise BundleError(
            f"{name}: {role} output {session.output!r} must have shape (batch, {width}), got {shape}"
        )
    if isinstance(shape[1], int) and shape[1] != width:
        raise BundleError(
            f"{name}: {role} output width is {shape[1]}, expected {width} ({what} in the manifest)"
        )
    y = np.asarray(session.run(probe))
    if y.shape != (1, width):
        raise BundleError(
            f"{name}: {role} output has shape {y.shape} for one text, expected (1, {width}) ({what} in the manifest)"
        )
    if not np.isfinite(y).all():
        raise BundleError(f"{name}: {role} output is not finite for a probe text")
    if role == "embedder" and abs(float(np.linalg.norm(y)) - 1.0) > 1e-2:
        raise BundleError(
            f"{name}: embedder must output unit-length embeddings, got norm {np.linalg.norm(y):.4f}"
        )


def check_max_length(session: OnnxSession, role: str, tokenizer: BundleTokenizer) -> None:
    """One run on ``max_length`` tokens (the probe text's tokens repeated between its first and last)."""
    n = tokenizer.max_length
    try:
        y = np.asarray(session.run(tokenizer.feeds([_longest_row(tokenizer)])))
    except RuntimeBackendError as e:
        raise BundleError(
            f"{session.path}: the {role} graph fails on an input of {n} tokens, the manifest's "
            f"tokenizer.max_length; is max_length larger than the model's position table? ({e})"
        ) from e
    if y.shape[0] != 1 or not np.isfinite(y).all():
        raise BundleError(f"{session.path}: the {role} graph gives no finite output for {n} tokens")


def _longest_row(tokenizer: BundleTokenizer) -> Tokens:
    """``max_length`` tokens: the probe text's tokens repeated between its first and last."""
    ids = tokenizer.tokenize([PROBE_TEXT])[0].ids
    n = tokenizer.max_length
    middle = ids[1:-1] or ids
    return Tokens((ids[0], *(middle * n)[: n - 2], ids[-1]), (0,) * n)


FEATURES = "features"  # the classifier graph's second output, read by the mahalanobis score


def load_abstain_arrays(files: dict, manifest: Manifest, classifier) -> tuple:
    """(kNN training embeddings or None, mahalanobis (whitener, class means) or None) of a bundle."""
    train = files.get(TRAIN_EMBEDDINGS_ROLE)
    train_embeddings = load_train_embeddings(train, manifest) if train is not None else None
    stats = None
    if "feature_means" in files:  # the mahalanobis score, or a cascade on it
        stats = load_feature_stats(files, manifest, classifier)
    return train_embeddings, stats


def load_feature_stats(files: dict, manifest: Manifest, classifier) -> tuple[np.ndarray, np.ndarray]:
    """(whitener (h, h), whitened class means (L, h)) of the mahalanobis score, float32, without pickle.

    ``classifier`` must be a single graph with a ``features`` output of width h.
    """
    if not isinstance(classifier, OnnxSession) or FEATURES not in classifier.outputs:
        raise BundleError(
            f"the abstain decision ({manifest.abstain.score!r} or its cascade) needs a classifier graph with a {FEATURES!r} output"
        )
    whitener = load_matrix(files["feature_whitener"], None)
    h = whitener.shape[0]
    means = load_matrix(files["feature_means"], (len(manifest.labels), h))
    if whitener.shape != (h, h):
        raise BundleError(
            f"{files['feature_whitener']}: expected a square (h, h) matrix, got {whitener.shape}"
        )
    width = classifier.output_shape(FEATURES)[-1]
    if isinstance(width, int) and width != h:
        raise BundleError(
            f"{files['feature_whitener']}: has {h} rows, the classifier's features have width {width}"
        )
    return whitener, means


def load_matrix(path: Path, shape: tuple | None) -> np.ndarray:
    """A finite float32 2-D .npy array (of ``shape`` when given), loaded without pickle."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise BundleError(f"{path}: cannot load it as a float32 .npy array without pickle ({e})") from e
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 2:
        raise BundleError(
            f"{path}: expected a 2-D float32 array, got {getattr(arr, 'dtype', type(arr).__name__)} "
            f"of shape {getattr(arr, 'shape', None)}"
        )
    if shape is not None and arr.shape != shape:
        raise BundleError(f"{path}: expected shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise BundleError(f"{path}: contains NaN or infinite values")
    return arr
