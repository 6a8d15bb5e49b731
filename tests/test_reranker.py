"""The Reranker on the tiny bundles: parity with PyTorch and with a numpy recomputation, batching,
streaming, threads, explanations, and strict loading.

The tiny models are random, so their top-k logits are nearly flat and almost every sample is hard at
the bundle's threshold. Tests that need both kinds set the threshold to the median top-k variance
(``with_threshold``), which splits the texts in two.
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import FrozenInstanceError, replace

import numpy as np
import pytest
from conftest import PREDICTION_KEYS

from lrsl_rt import Prediction, Reranker
from lrsl_rt.batches import length_batches
from lrsl_rt.errors import BundleError, InputError, UsageError
from lrsl_rt.fusion import fuse, softmax
from lrsl_rt.gate import is_hard, topk_indices, topk_variance
from lrsl_rt.manifest import MANIFEST_NAME, file_entry

EXTRA = ["", "Café naïve résumé 😀", "why " * 200, "card", "exchange rate euro dollar convert please help"]


@pytest.fixture(scope="module")
def texts(tiny_data):
    (_, _), (dev_x, _), (test_x, _) = tiny_data
    return dev_x + test_x + EXTRA


@pytest.fixture(scope="module")
def r_int8(tiny_bundle):
    return Reranker.from_bundle(tiny_bundle, threads=1)


@pytest.fixture(scope="module")
def r_fp32(tiny_bundle_fp32):
    return Reranker.from_bundle(tiny_bundle_fp32, threads=1)


def with_threshold(r: Reranker, threshold: float, embedder=None, batch_size=None) -> Reranker:
    m = replace(r.manifest, threshold=float(threshold))
    return Reranker(
        m, r.tokenizer, r.classifier, embedder or r.embedder, r.label_embeddings, batch_size or r.batch_size
    )


def split(r: Reranker, texts) -> Reranker:
    """The same Reranker with the threshold at the median variance: about half the texts are hard."""
    return with_threshold(r, np.median(topk_variance(r.logits(texts), r.k)))


# ---- parity with PyTorch -------------------------------------------------------------------------
def test_fp32_logits_match_pytorch(r_fp32, tiny_checkpoint, texts):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint / "classifier")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint / "classifier").eval()
    enc = tok(
        texts,
        truncation=True,
        max_length=r_fp32.manifest.tokenizer.max_length,
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        want = model(**enc).logits.numpy()
    np.testing.assert_allclose(r_fp32.logits(texts), want, atol=1e-5, rtol=1e-4)


def test_int8_logits_close_to_fp32(r_int8, r_fp32, texts):
    """Looser: dynamic int8 quantisation moves the logits a little (scale: their spread)."""
    a, b = r_int8.logits(texts), r_fp32.logits(texts)
    spread = float(np.ptp(b))
    assert np.abs(a - b).max() <= 0.1 * spread + 1e-3
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_fp32_embeddings_match_sentence_transformers(r_fp32, tiny_checkpoint, texts):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(tiny_checkpoint / "embedder"), device="cpu")
    short = [
        t for t in texts if len(r_fp32.tokenizer.tokenize([t])[0]) < r_fp32.manifest.tokenizer.max_length
    ]
    want = st.encode(short, normalize_embeddings=True, convert_to_numpy=True)
    got = r_fp32.embed(short)
    assert got.shape == (len(short), r_fp32.manifest.embedding_dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    labels_want = st.encode(list(r_fp32.manifest.label_texts), normalize_embeddings=True)
    np.testing.assert_allclose(r_fp32.label_embeddings, labels_want, atol=1e-5)


# ---- parity with a numpy recomputation -----------------------------------------------------------
@pytest.mark.parametrize("which", ["r_int8", "r_fp32"])
def test_predict_matches_numpy_reference(request, which, texts):
    """Recompute with gate and fusion on r.logits / r.similarities; the hard texts are embedded alone,
    in input order, so the batches are those of predict and the match is exact even for int8."""
    r = split(request.getfixturevalue(which), texts)
    preds = r.predict(texts)
    logits = r.logits(texts)
    hard = is_hard(logits, r.k, r.threshold)
    assert 0 < hard.sum() < len(texts)
    base = np.argmax(logits, axis=1)
    prob = softmax(logits)[np.arange(len(texts)), base]
    label, score, fused_score = base.copy(), prob.copy(), np.full(len(texts), np.nan)
    hard_idx = np.flatnonzero(hard)
    fused = fuse(logits[hard_idx], r.similarities([texts[i] for i in hard_idx]), r.fusion, r.k)
    label[hard_idx] = np.argmax(fused, axis=1)
    score[hard_idx] = softmax(fused).max(axis=1)  # the confidence: softmax of the final scores
    fused_score[hard_idx] = fused.max(axis=1)
    assert [p.hard for p in preds] == hard.tolist()
    assert [p.classifier_label_id for p in preds] == base.tolist()
    assert [p.label_id for p in preds] == label.tolist()
    assert [p.label for p in preds] == [r.labels[i] for i in label]
    np.testing.assert_array_equal([p.score for p in preds], score)
    np.testing.assert_array_equal([p.classifier_prob for p in preds], prob)
    np.testing.assert_array_equal(
        [np.nan if p.fused_score is None else p.fused_score for p in preds], fused_score
    )
    assert all(0.0 <= p.score <= 1.0 for p in preds)
    assert all(p.reranked == (p.label_id != p.classifier_label_id) for p in preds)


def test_similarities_are_embeddings_times_label_embeddings(r_int8, texts):
    np.testing.assert_allclose(
        r_int8.similarities(texts), r_int8.embed(texts) @ r_int8.label_embeddings.T, atol=1e-6
    )


class CountingSession:
    """Wraps the embedder session and counts the rows it is asked to embed."""

    def __init__(self, session):
        self.session, self.calls, self.rows = session, 0, 0
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, arrays):
        with self._lock:
            self.calls += 1
            self.rows += len(arrays["input_ids"])
        return self.session.run(arrays)


@pytest.mark.parametrize(("threshold", "expect"), [("median", "some"), (-1.0, "none"), (np.inf, "all")])
def test_embedder_runs_only_on_hard_samples(r_int8, texts, threshold, expect):
    t = np.median(topk_variance(r_int8.logits(texts), r_int8.k)) if threshold == "median" else threshold
    counter = CountingSession(r_int8.embedder)
    r = with_threshold(r_int8, t, embedder=counter, batch_size=4)
    preds = r.predict(texts)
    n_hard = sum(p.hard for p in preds)
    assert counter.rows == n_hard
    assert {"some": 0 < n_hard < len(texts), "none": n_hard == 0, "all": n_hard == len(texts)}[expect]
    hard_lengths = sorted(
        len(row) for row, p in zip(r.tokenizer.tokenize(texts), preds, strict=True) if p.hard
    )
    assert counter.calls == len(length_batches(hard_lengths, 4))  # the hard rows' own length batches


# ---- batching, order, streaming, threads ---------------------------------------------------------
def test_order_preserved_with_length_sorting(r_fp32, texts):
    rng = np.random.default_rng(0)
    shuffled = [texts[i] for i in rng.permutation(len(texts))]
    batched = with_threshold(r_fp32, r_fp32.threshold, batch_size=3).logits(shuffled)
    one_by_one = np.concatenate([r_fp32.logits([t]) for t in shuffled])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    lengths = [len(x) for x in r_fp32.tokenizer.tokenize(shuffled)]
    assert lengths != sorted(lengths)  # the input really is out of length order


def test_predict_is_deterministic_and_iter_equals_predict(r_int8, texts):
    r = split(r_int8, texts)
    first = r.predict(texts, chunk_size=7)
    assert r.predict(texts, chunk_size=7) == first
    assert list(r.predict_iter(iter(texts), chunk_size=7)) == first
    assert list(r.predict_iter(texts)) == r.predict(texts)


def test_predict_tokens_equals_predict_and_tokenizes_nothing(r_int8, texts):
    """Rows tokenized beforehand give predict's answers, and the tokenizer is not called again."""
    r = split(r_int8, texts)
    rows = r.tokenizer.tokenize(texts)
    calls = []
    tokenize = r.tokenizer.tokenize
    r.tokenizer.tokenize = lambda t: calls.append(t) or tokenize(t)
    try:
        got = r.predict_tokens(rows, explain=True)
    finally:
        del r.tokenizer.tokenize
    assert calls == [] and got == r.predict(texts, explain=True)


def test_on_run_sees_every_onnx_run_with_its_role(r_int8, texts):
    r = with_threshold(r_int8, np.median(topk_variance(r_int8.logits(texts), r_int8.k)), batch_size=4)
    runs = []
    r.on_run = lambda role, seconds: runs.append((role, seconds))
    preds = r.predict(texts)
    rows = r.tokenizer.tokenize(texts)

    def batches(keep):  # how many length batches of at most 4 the kept rows make
        return len(length_batches(sorted(len(x) for x, k in zip(rows, keep, strict=True) if k), 4))

    roles = [role for role, _ in runs]
    assert roles.count("classifier") == batches([True] * len(texts))
    assert roles.count("embedder") == batches([p.hard for p in preds])
    assert all(s > 0 for _, s in runs)


def test_replace_swaps_parts_and_keeps_sessions_batch_size_and_on_run(tiny_bundle, texts):
    from lrsl_rt.manifest import ExitPoint

    runs = []
    r = Reranker.from_bundle(tiny_bundle, threads=1, batch_size=3)
    r.on_run = lambda role, seconds: runs.append(role)
    every = r.replace(manifest=replace(r.manifest, threshold=float("inf")))  # every text is hard
    none = every.replace(manifest=replace(r.manifest, threshold=-1.0))  # variances are >= 0: none is
    for new in (every, none):
        assert (new.classifier, new.embedder, new.tokenizer) == (r.classifier, r.embedder, r.tokenizer)
        assert new.batch_size == 3 and new.on_run is r.on_run and new.bundle_dir == r.bundle_dir
    assert [p.hard for p in every.predict(texts)] == [True] * len(texts)
    assert "embedder" in runs  # the kept on_run saw the replaced Reranker's runs
    runs.clear()
    assert [p.hard for p in none.predict(texts)] == [False] * len(texts) and "embedder" not in runs
    assert runs.count("classifier") == len(
        length_batches(sorted(len(x) for x in r.tokenizer.tokenize(texts)), 3)
    )
    assert r.threshold == Reranker.from_bundle(tiny_bundle, threads=1).threshold  # r itself unchanged

    flipped = every.replace(label_embeddings=-r.label_embeddings)
    assert np.allclose(flipped.similarities(texts), -r.similarities(texts), atol=1e-6)
    with pytest.raises(BundleError, match="label embeddings have shape"):
        r.replace(label_embeddings=r.label_embeddings[:-1])
    exits = replace(r.manifest, exits=(ExitPoint(1, 0.5),), classifier_layers=2)
    with pytest.raises(UsageError, match="a manifest with exits needs a stage chain"):
        r.replace(manifest=exits)


def test_predict_iter_streams_in_chunks(r_int8, texts):
    pulled = []

    def source():
        for t in texts:
            pulled.append(t)
            yield t

    it = r_int8.predict_iter(source(), chunk_size=4)
    first = next(it)
    assert len(pulled) == 4 and isinstance(first, Prediction)
    assert len([first, *it]) == len(texts) and len(pulled) == len(texts)


def test_threads_share_one_reranker(r_int8, texts):
    r = split(r_int8, texts)
    serial = r.predict(texts, explain=True)
    results, errors = [None] * 8, []

    def work(i):
        try:
            results[i] = r.predict(texts[i:] + texts[:i], explain=True)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, got in enumerate(results):
        want = r.predict(texts[i:] + texts[:i], explain=True) if i else serial
        assert got == want


# ---- explanations and the Prediction type ---------------------------------------------------------
def test_explain_fields(r_int8, texts):
    r = split(r_int8, texts)
    preds = r.predict(texts, explain=True)
    assert [p.explanation for p in r.predict(texts)] == [None] * len(texts)
    logits = r.logits(texts)
    var, top = topk_variance(logits, r.k), topk_indices(logits, r.k)
    for i, p in enumerate(preds):
        ex = p.explanation
        assert ex.threshold == r.threshold and ex.k == r.k
        assert ex.variance == pytest.approx(var[i]) and p.hard == (ex.variance <= r.threshold)
        assert [lab for lab, _ in ex.topk_before] == [r.labels[j] for j in top[i]]
        assert [v for _, v in ex.topk_before] == pytest.approx(logits[i, top[i]].tolist())
        if p.hard:
            assert len(ex.topk_after) == r.k and ex.topk_after[0] == (p.label, pytest.approx(p.fused_score))
            assert [lab for lab, _ in ex.similarities] == [lab for lab, _ in ex.topk_before]
            assert all(-1.0 - 1e-5 <= c <= 1.0 + 1e-5 for _, c in ex.similarities)
        else:
            assert ex.topk_after is None and ex.similarities is None
            assert p.score == pytest.approx(softmax(logits[i : i + 1])[0, p.label_id])
            assert p.classifier_prob == p.score and p.fused_score is None
        d = p.to_dict()
        json.dumps(d)
        assert set(d) == {*PREDICTION_KEYS, "explanation"}
    with pytest.raises(FrozenInstanceError):
        preds[0].label = "x"


def test_properties_and_inputs(r_int8):
    assert r_int8.labels == r_int8.manifest.labels and len(r_int8.labels) == 4
    assert r_int8.k == r_int8.manifest.k and r_int8.threshold == r_int8.manifest.threshold
    assert r_int8.fusion == r_int8.manifest.fusion
    assert r_int8.predict([]) == [] and list(r_int8.predict_iter([])) == []
    assert r_int8.logits([]).shape == (0, 4) and r_int8.similarities([]).shape == (0, 4)
    with pytest.raises(InputError, match=r"text #1: expected a string, got int 3"):
        r_int8.predict(["fine", 3])
    with pytest.raises(InputError, match="text #5: expected a string, got NoneType"):
        list(r_int8.predict_iter(["a", "b", "c", "d", "e", None], chunk_size=2))
    with pytest.raises(InputError, match="single string"):
        r_int8.predict("just one text")
    with pytest.raises(UsageError, match="batch_size"):
        Reranker.from_bundle(r_int8.bundle_dir, batch_size=0)
    with pytest.raises(UsageError, match="chunk_size"):
        r_int8.predict(["a"], chunk_size=0)


def test_session_settings_reach_both_models(tiny_bundle):
    r = Reranker.from_bundle(
        tiny_bundle,
        threads=1,
        spinning=True,
        thread_pool="session",
        session_options={"graph_optimization": "basic"},
    )
    for s in (r.classifier, r.embedder):
        assert s.options == {
            "threads": 1,
            "spinning": True,
            "spin_after_run": True,
            "graph_optimization": "basic",
            "thread_pool": "session",
        }
        assert s.providers == ["CPUExecutionProvider"]
    assert r.classifier.output == "logits" or len(r.classifier.outputs) == 1


@pytest.mark.parametrize("spinning, after", [(None, False), (True, True), (False, False)])
def test_spinning_reaches_both_models(tiny_bundle, spinning, after):
    """Own pools by default: both models' threads spin during their runs and stop when a run returns."""
    r = Reranker.from_bundle(tiny_bundle, threads=1, spinning=spinning)
    for s in (r.classifier, r.embedder):
        assert s.options["spinning"] is (spinning is not False) and s.options["spin_after_run"] is after


# ---- strict loading -------------------------------------------------------------------------------
def edited(src, tmp_path, edit):
    """A copy of a bundle changed by ``edit(dir, manifest_dict)``, with the file checksums refreshed."""
    dst = tmp_path / "bundle"
    shutil.copytree(src, dst)
    d = json.loads((dst / MANIFEST_NAME).read_text(encoding="utf-8"))
    edit(dst, d)
    for entry in d["files"].values():
        fresh = file_entry(dst, entry["path"])
        entry.update(size=fresh.size, sha256=fresh.sha256)
    (dst / MANIFEST_NAME).write_text(json.dumps(d), encoding="utf-8")
    return dst


def save_label_embeddings(array):
    def edit(dst, d):
        np.save(dst / d["files"]["label_embeddings"]["path"], array)

    return edit


def test_label_embeddings_checked(tiny_bundle, tmp_path):
    le = np.load(tiny_bundle / "label_embeddings.npy")
    cases = [
        (le[:3], r"label_embeddings.npy: expected shape \(4, \d+\) .*got \(3, \d+\)"),
        (le.astype(np.float64), "expected dtype float32, got float64"),
        (np.array([{"a": 1}], dtype=object), "cannot load without pickle"),
        (le * 2, "rows must have unit length"),
    ]
    for i, (array, match) in enumerate(cases):
        path = edited(tiny_bundle, tmp_path / str(i), save_label_embeddings(array))
        with pytest.raises(BundleError, match=match):
            Reranker.from_bundle(path)


def test_label_count_must_match_classifier_width(tiny_bundle, tmp_path):
    def three_labels(dst, d):
        d["labels"], d["label_texts"] = d["labels"][:3], d["label_texts"][:3]
        np.save(dst / "label_embeddings.npy", np.load(dst / "label_embeddings.npy")[:3])

    path = edited(tiny_bundle, tmp_path, three_labels)
    with pytest.raises(
        BundleError,
        match=r"classifier_\w+\.onnx: classifier output .*4.* expected.* 3|classifier output width is 4, expected 3",
    ):
        Reranker.from_bundle(path)


def test_embedding_dim_must_match_embedder(tiny_bundle, tmp_path):
    def wider(dst, d):
        le = np.load(dst / "label_embeddings.npy")
        le = np.hstack([le, np.zeros((len(le), 1), np.float32)])
        np.save(dst / "label_embeddings.npy", le)
        d["embedding_dim"] += 1

    path = edited(tiny_bundle, tmp_path, wider)
    with pytest.raises(BundleError, match=r"embedder_\w+\.onnx: embedder output .*expected .*embedding_dim"):
        Reranker.from_bundle(path)


def test_tampered_and_missing_files(tiny_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    tok = dst / "tokenizer.json"
    text = tok.read_text(encoding="utf-8")
    tok.write_text(text.replace("[UNK]", "[UNQ]", 1), encoding="utf-8")  # same size, other bytes
    with pytest.raises(BundleError, match="tokenizer.json: sha256 .* does not match"):
        Reranker.from_bundle(dst)
    tok.write_text(text + " ", encoding="utf-8")
    with pytest.raises(BundleError, match="tokenizer.json: size"):
        Reranker.from_bundle(dst)
    tok.unlink()
    with pytest.raises(
        BundleError, match="tokenizer.json: file for 'tokenizer' named in manifest.json is missing"
    ):
        Reranker.from_bundle(dst)
    with pytest.raises(BundleError, match="bundle directory not found"):
        Reranker.from_bundle(tmp_path / "nowhere")


def test_shared_thread_pool_gives_the_same_predictions(tiny_bundle, r_int8):
    """thread_pool='shared' (process-wide, so in a fresh interpreter) changes the threads, not the answers."""
    import subprocess
    import sys

    texts = ["my card has not arrived", "how do I top up", "cash", "exchange rate for euros please"]
    script = (
        "import json, sys; from lrsl_rt import Reranker\n"
        "r = Reranker.from_bundle(sys.argv[1], threads=1, thread_pool='shared')\n"
        "assert {s.options['thread_pool'] for s in (r.classifier, r.embedder)} == {'shared'}\n"
        "assert not any(s._session.get_session_options().use_per_session_threads "
        "for s in (r.classifier, r.embedder))\n"
        "print(json.dumps([[p.label, p.score, p.hard] for p in r.predict(sys.argv[2:])]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tiny_bundle), *texts], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    shared = json.loads(proc.stdout)
    alone = [[p.label, p.score, p.hard] for p in r_int8.predict(texts)]
    assert [row[0] for row in shared] == [row[0] for row in alone]
    assert [row[2] for row in shared] == [row[2] for row in alone]
    np.testing.assert_allclose([row[1] for row in shared], [row[1] for row in alone], rtol=1e-5)
