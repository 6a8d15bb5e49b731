"""The ONNX Runtime session wrapper on hand-built graphs (no exported model needed).

The graph ``toy`` computes ``sum(input_ids * attention_mask)`` per row (plus ``token_type_ids`` when
it declares that input), so the value fed is visible in the output: for ids [[2, 7, 3], [2, 3, 0]]
and mask [[1, 1, 1], [1, 1, 0]] it returns [[12.], [5.]].
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lrsl_rt.errors import RuntimeBackendError, UsageError
from lrsl_rt.session import OnnxSession, resolve_providers

IDS = np.array([[2, 7, 3], [2, 3, 0]], dtype=np.int64)
MASK = np.array([[1, 1, 1], [1, 1, 0]], dtype=np.int64)


def toy_graph(path, with_types: bool = False, int_type: str = "INT64"):
    import onnx
    from onnx import TensorProto, helper

    elem = getattr(TensorProto, int_type)
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_types else [])
    inputs = [helper.make_tensor_value_info(n, elem, ["batch", "seq"]) for n in names]
    nodes = [helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"])]
    last = "masked"
    if with_types:
        nodes.append(helper.make_node("Add", ["masked", "token_type_ids"], ["typed"]))
        last = "typed"
    nodes += [
        helper.make_node("Cast", [last], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["f", "axes"], ["score"], keepdims=1),
    ]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    out = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])
    graph = helper.make_graph(nodes, "toy", inputs, [out], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_graph(tmp_path_factory.mktemp("onnx") / "toy.onnx")


def test_runs_and_reports_providers(toy):
    s = OnnxSession(toy, providers="cpu", threads=1)
    assert s.providers == ["CPUExecutionProvider"]
    assert s.input_names == ["input_ids", "attention_mask"]
    assert s.output == "score" and s.output_shape() == ["batch", 1]
    extra = {"token_type_ids": np.ones_like(IDS)}  # not declared by the graph: not fed
    np.testing.assert_array_equal(s.run({"input_ids": IDS, "attention_mask": MASK, **extra}), [[12.0], [5.0]])


def test_token_type_ids_optional(tmp_path):
    s = OnnxSession(toy_graph(tmp_path / "typed.onnx", with_types=True))
    np.testing.assert_array_equal(s.run({"input_ids": IDS, "attention_mask": MASK}), [[12.0], [5.0]])
    types = np.array([[0, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(
        s.run({"input_ids": IDS, "attention_mask": MASK, "token_type_ids": types}), [[14.0], [5.0]]
    )


def test_inputs_cast_to_declared_int32(tmp_path):
    s = OnnxSession(toy_graph(tmp_path / "int32.onnx", int_type="INT32"))
    np.testing.assert_array_equal(s.run({"input_ids": IDS, "attention_mask": MASK}), [[12.0], [5.0]])


def test_missing_input_is_named(toy):
    with pytest.raises(RuntimeBackendError, match="needs input 'attention_mask'"):
        OnnxSession(toy).run({"input_ids": IDS})


def test_run_failure_is_wrapped_with_cause(toy):
    s = OnnxSession(toy)
    with pytest.raises(
        RuntimeBackendError, match=r"toy.onnx: ONNX Runtime failed on a batch with input shapes"
    ) as info:
        s.run({"input_ids": IDS, "attention_mask": MASK[:1, :2]})
    assert info.value.__cause__ is not None


def test_corrupt_model_is_wrapped_with_cause(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(
        RuntimeBackendError, match="bad.onnx: ONNX Runtime .* could not load this model"
    ) as info:
        OnnxSession(bad)
    assert info.value.__cause__ is not None


def test_options(toy):
    s = OnnxSession(toy, threads=2, spinning=True, graph_optimization="basic")
    assert s.options == {
        "threads": 2,
        "spinning": True,
        "spin_after_run": True,
        "graph_optimization": "basic",
        "thread_pool": "session",
    }
    assert spin_config(s) == ("1", "1", None)


def spin_config(session) -> tuple:
    """(intra-op allow_spinning, inter-op allow_spinning, force_spinning_stop or None) as set."""

    def entry(key):
        try:
            return session._session.get_session_options().get_session_config_entry(key)
        except RuntimeError:  # onnxruntime: "SessionOptions does not have configuration with key"
            return None

    keys = ("intra_op.allow_spinning", "inter_op.allow_spinning", "force_spinning_stop")
    return tuple(entry(f"session.{k}") for k in keys)


@pytest.mark.parametrize(
    "spinning, after, config",
    [(None, False, ("1", "1", "1")), (True, True, ("1", "1", None)), (False, False, ("0", "0", None))],
)
def test_spinning_modes(toy, spinning, after, config):
    """Default: threads spin during a run and stop when it returns; True: ONNX Runtime's spin-on; False: sleep."""
    s = OnnxSession(toy, threads=2, spinning=spinning)
    assert s.options["spinning"] is (spinning is not False) and s.options["spin_after_run"] is after
    assert spin_config(s) == config


def test_bad_options(toy):
    with pytest.raises(UsageError, match="threads must be a positive integer"):
        OnnxSession(toy, threads=0)
    with pytest.raises(UsageError, match="graph_optimization"):
        OnnxSession(toy, graph_optimization="max")
    with pytest.raises(UsageError, match="thread_pool must be one of"):
        OnnxSession(toy, thread_pool="global")
    with pytest.raises(UsageError, match="spinning=False needs thread_pool='session'"):
        OnnxSession(toy, thread_pool="shared", spinning=False)
    with pytest.raises(TypeError, match="inter_threads"):  # removed: sessions run sequentially
        OnnxSession(toy, inter_threads=1)
    with pytest.raises(UsageError, match="spinning must be True, False or None"):
        OnnxSession(toy, spinning="yes")
    with pytest.raises(RuntimeBackendError, match="no output 'logits'"):
        OnnxSession(toy, output="logits")
    assert OnnxSession(toy, output=("logits", "score")).output == "score"


def test_provider_choice():
    avail = ["CPUExecutionProvider"]
    assert resolve_providers("CPU", avail) == ["CPUExecutionProvider"]
    assert resolve_providers(["CPUExecutionProvider"], avail) == ["CPUExecutionProvider"]
    with pytest.raises(UsageError, match="unknown provider 'tpu'"):
        resolve_providers("tpu", avail)
    with pytest.raises(UsageError, match="non-empty list"):
        resolve_providers([], avail)


def test_cuda_fallback_is_loud():
    with pytest.warns(
        RuntimeWarning, match=r"CUDAExecutionProvider.*not available.*running on \['CPUExecutionProvider'\]"
    ):
        used = resolve_providers("cuda", ["CPUExecutionProvider"])
    assert used == ["CPUExecutionProvider"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when CUDA is there
        assert (
            resolve_providers("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0]
            == "CUDAExecutionProvider"
        )


def test_cuda_session_reports_the_provider_used(toy):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: no fall-back to observe")
    with pytest.warns(RuntimeWarning, match="running on"):
        s = OnnxSession(toy, providers="cuda")
    assert s.providers == ["CPUExecutionProvider"]


@pytest.mark.gpu
def test_cuda_session_runs_on_cuda(toy):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu and a CUDA device")
    s = OnnxSession(toy, providers="cuda")
    assert s.providers[0] == "CUDAExecutionProvider"
    np.testing.assert_array_equal(s.run({"input_ids": IDS, "attention_mask": MASK}), [[12.0], [5.0]])


# ---- the shared thread pool: process-wide state, so each case runs in a fresh interpreter ----------
SHARED_POOL_SCRIPT = """
import json, sys, warnings
import numpy as np
import onnxruntime as ort
from lrsl_rt.errors import UsageError
from lrsl_rt.session import OnnxSession
path, case = sys.argv[1], sys.argv[2]
ids = np.array([[2, 7, 3], [2, 3, 0]]); mask = np.array([[1, 1, 1], [1, 1, 0]])
out = []
if case == "old-onnxruntime":  # an onnxruntime without the Python call for the global pool
    del ort.set_global_thread_pool_sizes
    try:
        OnnxSession(path, thread_pool="shared")
    except UsageError as e:
        out.append(str(e))
    out.append(OnnxSession(path, threads=1).options)  # the default still works afterwards
    print(json.dumps(out))
    sys.exit(0)
if case == "foreign":  # another library made the global pool first
    ort.set_global_thread_pool_sizes(1, 1)
    try:
        OnnxSession(path, threads=1)
        out.append("session in a foreign pool: loaded")
    except UsageError as e:
        out.append(str(e))
else:  # a session of its own before the shared pool exists is fine
    out.append({"options": OnnxSession(path, threads=1).options})
for threads in (1, 1, 2):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = OnnxSession(path, threads=threads, thread_pool="shared")
    out.append({
        "options": s.options,
        "per_session": s._session.get_session_options().use_per_session_threads,
        "score": s.run({"input_ids": ids, "attention_mask": mask}).ravel().tolist(),
        "warnings": [str(w.message) for w in caught],
    })
try:
    OnnxSession(path, threads=1)
    out.append("session after shared: loaded")
except UsageError as e:
    out.append(str(e))
print(json.dumps(out))
"""


def _shared_pool_run(toy, case):
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", SHARED_POOL_SCRIPT, str(toy), case],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_shared_pool_is_made_once_and_used_by_every_shared_session(toy):
    before, first, second, other, after = _shared_pool_run(toy, "ours")
    assert before["options"]["thread_pool"] == "session"
    for s in (first, second, other):
        assert s["options"]["thread_pool"] == "shared" and s["options"]["spinning"] is True
        assert s["per_session"] is False and s["score"] == [12.0, 5.0]
    assert first["warnings"] == second["warnings"] == []
    # the pool has one thread count: a session asking for another one is told what it gets
    assert other["warnings"] == [
        "toy.onnx: uses this process's shared thread pool, made earlier with threads=1, not threads=2"
    ]
    assert [s["options"]["threads"] for s in (first, second, other)] == [1, 1, 1]  # the pool's size
    # ONNX Runtime refuses sessions with their own threads once the pool exists: a clear UsageError
    assert "thread_pool='session' asked" in after and "made by lrsl_rt with threads=1" in after


def test_global_pool_made_by_someone_else(toy):
    first, *runs, after = _shared_pool_run(toy, "foreign")
    assert "runs ONNX Runtime's global thread pool (made outside lrsl_rt)" in first
    assert "pass thread_pool='shared'" in first
    for s in runs:
        assert s["options"]["thread_pool"] == "shared" and s["per_session"] is False
        assert s["options"]["threads"] is None  # unknown: not ours
        assert s["score"] == [12.0, 5.0]
        assert len(s["warnings"]) == 1 and "another part of this process made" in s["warnings"][0]
    assert "thread_pool='session' asked" in after and "made outside lrsl_rt" in after


def test_shared_pool_needs_an_onnxruntime_that_can_make_it(toy):
    message, options = _shared_pool_run(toy, "old-onnxruntime")
    assert "thread_pool='shared' needs onnxruntime >= 1.22" in message
    assert options["thread_pool"] == "session" and options["threads"] == 1
