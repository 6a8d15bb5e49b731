"""One ONNX Runtime session wrapper, used for both the classifier and the embedder.

Design (after fastembed's ``OnnxModel``): this class owns everything about the session -- provider
choice, thread counts, session options, feeding and running -- and knows nothing about what the model
means. The Reranker holds two of them and decides what goes in (token arrays) and what comes out
(logits, embeddings).

- ``providers``: ``"cpu"``, ``"cuda"`` (CUDA first, CPU for the nodes CUDA cannot run) or an explicit
  ONNX Runtime provider list. A requested provider that this onnxruntime build lacks is dropped with
  a loud ``RuntimeWarning`` naming the providers actually used -- never a silent fall-back.
  ``session.providers`` is what the session really runs on.
- ``threads``: the session's intra-op threads (None: ONNX Runtime's default, one per physical core).
  Graphs run sequentially, one operator at a time, so there is no inter-op setting.
- ``thread_pool``: ``"session"`` (the default): each session owns its threads. ``"shared"``: ONNX
  Runtime's process-wide pool (onnxruntime >= 1.22), made once with ``threads`` threads and used by
  every shared session, so the classifier and the embedder, which run back to back, share warm
  threads. Once a process has that pool, ONNX Runtime refuses sessions with threads of their own
  (a ``UsageError`` here), so it is for processes that run only lrsl-rt. ``options["threads"]`` is
  the pool's thread count.
- ``spinning``: how idle threads wait for work. ``True``: they spin between operators and briefly
  after each run (ONNX Runtime's default); ``False``: they sleep and are woken for each operator;
  ``None`` (the default): they spin during a run and stop when it returns, so no thread spins
  against the other model's (in the shared pool: ``True``, which ONNX Runtime cannot switch off
  there). ``options["spin_after_run"]`` says which. Measurements: docs/results/.
- ``output``: which graph output ``run`` returns -- a name, names to try in order (the first output
  when none matches), or None for the first output.
- ``run(arrays)`` feeds only the inputs the graph declares, cast to the declared integer type;
  ``token_type_ids`` is optional (zeros when the graph wants it and it was not given).
- Any onnxruntime failure becomes a ``RuntimeBackendError`` with the cause chained; a missing
  onnxruntime names the extra to install.

onnxruntime is imported inside the functions that need it, so ``import lrsl_rt`` stays light.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np

from .defaults import install_hint
from .errors import RuntimeBackendError, UsageError

PROVIDER_ALIASES = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}
GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")
THREAD_POOLS = ("session", "shared")
_FOREIGN = "made outside lrsl_rt"
_shared_pool: dict[str, int | str | None] = {}  # {"threads": n} once this process has a shared pool
_shared_pool_lock = threading.Lock()
_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def import_onnxruntime():
    """The onnxruntime module, or a RuntimeBackendError naming the extra to install."""
    try:
        import onnxruntime
    except ImportError as e:
        raise RuntimeBackendError(
            f"onnxruntime is not installed; install the cpu extra: {install_hint('cpu')} "
            "(or the gpu extra for CUDA; never both)"
        ) from e
    return onnxruntime


def max_threads() -> int:
    """The most threads a session may ask for: 4 per CPU (``os.cpu_count()``), at most 1024.

    More threads than cores only add contention; a count far beyond that is a typo (``--threads
    80000``), and ONNX Runtime would try to start them all.
    """
    return min(4 * (os.cpu_count() or 1), 1024)


def check_thread_count(key: str, value) -> None:
    """UsageError unless ``value`` is None or an int in [1, max_threads()]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{key} must be a positive integer or None, got {value!r}")
    if value > max_threads():
        raise UsageError(
            f"{key}={value} is more than {max_threads()} (4 per CPU of this machine's {os.cpu_count()}, "
            "at most 1024); use at most the number of cores"
        )


def resolve_providers(providers: str | list | tuple, available: list[str]) -> list:
    """Provider list to hand to ONNX Runtime; warns loudly about requested providers that are missing.

    >>> resolve_providers("cpu", ["CPUExecutionProvider"])
    ['CPUExecutionProvider']
    """
    if isinstance(providers, str):
        key = providers.lower()
        if key in PROVIDER_ALIASES:
            wanted = list(PROVIDER_ALIASES[key])
        elif providers.endswith("ExecutionProvider"):
            wanted = [providers]
        else:
            raise UsageError(
                f"unknown provider {providers!r}; use 'cpu', 'cuda' or an ONNX Runtime provider name "
                f"such as 'CPUExecutionProvider' (available here: {', '.join(available)})"
            )
    elif isinstance(providers, (list, tuple)) and providers:
        wanted = list(providers)
    else:
        raise UsageError(f"providers must be 'cpu', 'cuda' or a non-empty list, got {providers!r}")

    def name(p) -> str:  # a provider is a name or a (name, options) pair
        return p[0] if isinstance(p, (list, tuple)) else p

    kept = [p for p in wanted if name(p) in available]
    missing = [name(p) for p in wanted if name(p) not in available]
    if not kept:
        kept = ["CPUExecutionProvider"]
    if missing:
        hint = (
            f" (install the gpu extra instead of the cpu one: {install_hint('gpu')})"
            if "CUDAExecutionProvider" in missing
            else ""
        )
        warnings.warn(
            f"ONNX Runtime provider(s) {missing} requested but not available in this onnxruntime build "
            f"(available: {available}); running on {[name(p) for p in kept]}{hint}",
            RuntimeWarning,
            stacklevel=3,
        )
    return kept


class OnnxSession:
    """An ONNX Runtime inference session with our defaults; thread-safe (no state changes after init).

    With a bundle's classifier graph (skipped as a doctest: it needs the file):

    >>> s = OnnxSession("classifier_int8.onnx", providers="cpu", threads=2)  # doctest: +SKIP
    >>> s.run({"input_ids": ids, "attention_mask": mask}).shape  # doctest: +SKIP
    (8, 77)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        providers: str | list | tuple = "cpu",
        threads: int | None = None,
        spinning: bool | None = None,
        graph_optimization: str = "all",
        output: str | tuple[str, ...] | None = None,
        thread_pool: str = "session",
    ) -> None:
        ort = import_onnxruntime()
        self.path = Path(path)
        _check_settings(ort, threads, spinning, graph_optimization, thread_pool)
        wanted = resolve_providers(providers, ort.get_available_providers())
        opts, self.options = self._session_options(ort, threads, spinning, graph_optimization, thread_pool)
        self._session = self._load(ort, opts, wanted)
        self.providers: list[str] = self._session.get_providers()
        asked = [p[0] if isinstance(p, (list, tuple)) else p for p in wanted]
        if asked[0] not in self.providers:
            warnings.warn(
                f"{self.path.name}: ONNX Runtime could not start {asked[0]} and runs on {self.providers}",
                RuntimeWarning,
                stacklevel=2,
            )
        self.inputs = {i.name: i for i in self._session.get_inputs()}
        self.outputs = {o.name: o for o in self._session.get_outputs()}
        self.output = self._pick_output(output)

    def _session_options(self, ort, threads, spinning, graph_optimization, thread_pool):
        """(ONNX Runtime SessionOptions, the ``options`` dict that reports them)."""
        spin_after_run = thread_pool == "shared" if spinning is None else spinning
        spinning = True if spinning is None else spinning
        opts = ort.SessionOptions()
        if thread_pool == "shared":
            opts.use_per_session_threads = False
            threads, note = _use_shared_pool(ort, threads)  # the pool's count, which may differ
            if note:
                warnings.warn(f"{self.path.name}: {note}", RuntimeWarning, stacklevel=3)
        else:
            _refuse_if_shared_pool(self.path.name)
            opts.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default (one per physical core)
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[graph_optimization]
        spin = "1" if spinning else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        if spinning and not spin_after_run:
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        options = {
            "threads": threads,  # in the shared pool: the pool's (None: ONNX Runtime's default or unknown)
            "spinning": bool(spinning),
            "spin_after_run": bool(spin_after_run),
            "graph_optimization": graph_optimization,
            "thread_pool": thread_pool,
        }
        return opts, options

    def _load(self, ort, opts, providers):
        """The InferenceSession; ONNX Runtime's failures become our errors with the cause chained."""
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own pybind exception types
            if "use_per_session_threads must be false" in str(e):
                with _shared_pool_lock:
                    origin = _pool_origin() if "threads" in _shared_pool else _FOREIGN
                raise UsageError(
                    f"{self.path.name}: this process runs ONNX Runtime's global thread pool ({origin}), "
                    "so every session must use it; pass thread_pool='shared'"
                ) from e
            raise RuntimeBackendError(
                f"{self.path}: ONNX Runtime (onnxruntime {ort.__version__}) could not load this model: "
                f"{_first_line(e)}; the file may be damaged or need a newer onnxruntime"
            ) from e

    def _pick_output(self, output) -> str:
        if isinstance(output, str) and output not in self.outputs:
            raise RuntimeBackendError(
                f"{self.path}: the graph has no output {output!r}; it has {list(self.outputs)}"
            )
        candidates = (output,) if isinstance(output, str) else tuple(output or ())
        return next((o for o in candidates if o in self.outputs), next(iter(self.outputs)))

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs)

    def output_shape(self, name: str | None = None) -> list:
        """Declared shape of an output; symbolic dimensions are strings or None."""
        return list(self.outputs[name or self.output].shape)

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The selected output for these inputs; extra keys of ``arrays`` are ignored."""
        return self.run_outputs(arrays, (self.output,))[0]

    def run_outputs(self, arrays: dict[str, np.ndarray], outputs: tuple[str, ...]) -> list[np.ndarray]:
        """The named outputs for these inputs (a stage graph's logits and hidden states)."""
        feeds = {}
        for name, arg in self.inputs.items():
            if name in arrays:
                value = arrays[name]
            elif name == "token_type_ids" and "input_ids" in arrays:
                value = np.zeros_like(arrays["input_ids"])
            else:
                raise RuntimeBackendError(
                    f"{self.path}: the graph needs input {name!r}, which the tokenizer does not produce "
                    f"(it gives {sorted(arrays)})"
                )
            dtype = _INT_TYPES.get(arg.type)
            feeds[name] = np.ascontiguousarray(value, dtype=dtype) if dtype else value
        try:
            return self._session.run(list(outputs), feeds)
        except Exception as e:
            shapes = {k: tuple(v.shape) for k, v in feeds.items()}
            raise RuntimeBackendError(
                f"{self.path.name}: ONNX Runtime failed on a batch with input shapes {shapes}: {_first_line(e)}"
            ) from e

    def __repr__(self) -> str:
        return f"OnnxSession({str(self.path)!r}, providers={self.providers}, options={self.options})"


def _check_settings(ort, threads, spinning, graph_optimization, thread_pool) -> None:
    check_thread_count("threads", threads)
    if graph_optimization not in GRAPH_OPT_LEVELS:
        raise UsageError(f"graph_optimization must be one of {GRAPH_OPT_LEVELS}, got {graph_optimization!r}")
    if thread_pool not in THREAD_POOLS:
        raise UsageError(f"thread_pool must be one of {THREAD_POOLS}, got {thread_pool!r}")
    if spinning is not None and not isinstance(spinning, bool):
        raise UsageError(f"spinning must be True, False or None, got {spinning!r}")
    if thread_pool != "shared":
        return
    if spinning is False:
        raise UsageError(
            "spinning=False needs thread_pool='session': the threads of ONNX Runtime's shared "
            "pool spin after each run (its Python API has no switch for them)"
        )
    if not hasattr(ort, "set_global_thread_pool_sizes"):
        raise UsageError(
            f"thread_pool='shared' needs onnxruntime >= 1.22 (this is {ort.__version__}), "
            "which can make a process-wide thread pool from Python; use thread_pool='session'"
        )


def _refuse_if_shared_pool(name: str) -> None:
    with _shared_pool_lock:
        if "threads" in _shared_pool:
            raise UsageError(
                f"{name}: thread_pool='session' asked, but this process already runs "
                f"ONNX Runtime's shared thread pool ({_pool_origin()}), and ONNX Runtime then "
                "refuses sessions with threads of their own; pass thread_pool='shared'"
            )


def _use_shared_pool(ort, threads: int | None) -> tuple[int | None, str | None]:
    """Make ONNX Runtime's process-wide thread pool with ``threads`` intra-op threads, once per
    process. Returns the pool's thread count (None: ONNX Runtime's default or unknown) and None, or
    a note when that pool differs from the request."""
    with _shared_pool_lock:
        if "threads" not in _shared_pool:
            try:
                ort.set_global_thread_pool_sizes(threads or 0, 1)  # inter-op: unused (sequential runs)
            except Exception as e:
                if "already been created" not in str(e):
                    raise RuntimeBackendError(
                        f"ONNX Runtime could not make its shared thread pool: {_first_line(e)}"
                    ) from e
                _shared_pool["threads"] = _FOREIGN  # made by another library of this process
                _shared_pool["error"] = _first_line(e)
            else:
                _shared_pool["threads"] = threads
        have = _shared_pool["threads"]
    if have == _FOREIGN:
        note = (
            "uses the ONNX Runtime thread pool that another part of this process made, whose thread "
            f"count is unknown here, not threads={_count(threads)} ({_shared_pool['error']})"
        )
        return None, note
    if have != threads:
        return have, (
            f"uses this process's shared thread pool, made earlier with threads={_count(have)}, "
            f"not threads={_count(threads)}"
        )
    return have, None


def _count(threads: int | None) -> str:
    return "ONNX Runtime's default" if threads is None else str(threads)


def _pool_origin() -> str:
    have = _shared_pool["threads"]
    return "made outside lrsl_rt" if have == _FOREIGN else f"made by lrsl_rt with threads={_count(have)}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
