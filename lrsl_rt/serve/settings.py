"""The settings of ``lrsl-rt serve``: its flags, checked once into a frozen :class:`ServeSettings`.

This module imports nothing of the server stack, so ``lrsl-rt --help`` and ``lrsl-rt serve --help``
stay instant and work without the ``serve`` extra. How to choose each setting is in the user guide
(docs/guide/serve.md); the help texts say what each one trades.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..bundle_dir import require_bundle
from ..errors import UsageError

SETTINGS_ENV = "LRSL_RT_SERVE_SETTINGS"  # how a --workers parent hands the settings to its workers
AUTO_MAX_WORKERS = 8  # --workers auto: each worker holds a copy of the bundle in memory


@dataclass(frozen=True)
class ServeSettings:
    """Everything one server process needs; ``threads`` is already resolved (never None)."""

    bundle: str
    model_name: str = "bundle"
    host: str = "127.0.0.1"
    port: int = 8080
    max_batch_texts: int = 32
    max_batch_tokens: int = 8192
    max_wait_ms: float = 0.0
    max_queue_texts: int = 128
    max_queue_ms: float = 250.0
    max_request_texts: int = 64
    max_text_chars: int = 4000
    workers: int = 1
    threads: int = 1
    solo_threads: int = 0  # 0: off; else the threads of a batch that runs while no other worker runs one
    thread_pool: str = "session"
    provider: str = "cpu"
    batch_size: int | None = None
    drain_timeout: float = 30.0
    drain_delay: float = 0.0
    idle_timeout: float = 5.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    write_timeout: float = 30.0
    max_connections: int = 1000
    abstain: bool | None = None  # None: the bundle's choice (on when it has an abstain calibration)

    @property
    def max_body_bytes(self) -> int:
        """The largest request body accepted: the largest valid request, every character escaped as \\uXXXX."""
        return self.max_request_texts * (6 * self.max_text_chars + 8) + 1024

    def batching(self) -> dict:
        keys = (
            "max_batch_texts",
            "max_batch_tokens",
            "max_wait_ms",
            "max_queue_texts",
            "max_queue_ms",
            "max_request_texts",
            "max_text_chars",
            "workers",
            "threads",
            "solo_threads",
            "thread_pool",
            "provider",
            "batch_size",
            "idle_timeout",
            "header_timeout",
            "body_timeout",
            "write_timeout",
            "max_connections",
        )
        return {k: getattr(self, k) for k in keys} | {"max_body_bytes": self.max_body_bytes}

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))


def _non_negative(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = -1.0
    if not x >= 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}")
    return x


def _positive(value: str) -> float:
    x = _non_negative(value)
    if x == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value!r}")
    return x


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value!r}")
    return int(value)


def _solo_threads(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a count >= 0, got {value!r}")
    return n


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
GENERIC_FOLDER = "bundle"  # artifacts/banking77/bundle is named after its parent: banking77


def model_name_of(bundle: str | os.PathLike) -> str:
    """The default v2 model name of a bundle folder: its name, or its parent's when it is called ``bundle``.

    >>> model_name_of("artifacts/banking77/bundle"), model_name_of("/models/hwu64-int8"), model_name_of("/bundle")
    ('banking77', 'hwu64-int8', 'bundle')
    """
    path = Path(os.path.abspath(bundle))
    if path.name == GENERIC_FOLDER and path.parent.name:
        return path.parent.name
    return path.name or GENERIC_FOLDER


def _model_name(value: str) -> str:
    if not MODEL_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"expected 1-128 letters, digits, '.', '_' or '-' (a URL path segment), got {value!r}"
        )
    return value


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value!r}")
    return int(value)


THREADS_HELP = (
    "ONNX Runtime intra-op threads per model in each worker, or in all with --thread-pool shared "
    "(default: the usable cores divided among the workers, so one per worker with --workers auto)"
)


def add_serve_arguments(p: argparse.ArgumentParser, positive_int) -> None:
    """The flags of ``lrsl-rt serve`` beyond --bundle and the runtime's --batch-size/--provider/--threads/--thread-pool
    (whose --threads help it makes say what the default is for a server)."""
    for action in p._actions:
        if action.dest == "threads":
            action.help = THREADS_HELP
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)"
    )
    p.add_argument("--port", type=_port, default=8080, help="TCP port (default 8080; 0 picks a free one)")
    p.add_argument(
        "--model-name",
        type=_model_name,
        help="the model's name in the Open Inference Protocol paths, /v2/models/NAME/infer (default: the "
        "bundle folder's name, or its parent's when the folder is called bundle)",
    )
    p.add_argument(
        "--abstain",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="answer texts that fit no label with the bundle's fallback label (default: on when the bundle "
        "has an abstain calibration; records then carry out_of_scope)",
    )
    p.add_argument(
        "--max-batch-texts",
        type=positive_int,
        default=32,
        help="most texts per model call: larger batches raise throughput under load, and the wait of each text",
    )
    p.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        default=8192,
        help="most tokens (before padding) per model call: bounds the memory and time of a batch of long texts",
    )
    p.add_argument(
        "--max-wait-ms",
        type=_non_negative,
        default=0.0,
        help="how long a partial batch waits for more texts while the model is idle (default 0: never; "
        "texts that arrive while a batch runs join the next one anyway). More wait, fuller batches, slower answers",
    )
    p.add_argument(
        "--max-queue-texts",
        type=positive_int,
        default=128,
        help="texts allowed to wait for a batch, per worker (default 128); beyond it requests get 429 with "
        "Retry-After. It bounds the wait of an accepted text: about this many texts' model time, e.g. 128 at "
        "400 texts/s per worker is 0.32 s. Choose it as the longest queue wait your clients accept times one "
        "worker's texts per second (benchmarks.serve measures it on your model and machine: a count cannot "
        "know them), and at least twice --max-request-texts, so that a largest request is not refused while "
        "the queue is nearly empty. Smaller: overload shows sooner, as quick 429s instead of long waits",
    )
    p.add_argument(
        "--max-queue-ms",
        type=_non_negative,
        default=250.0,
        help="the same bound in time (default 250; 0: off): a request is refused with 429 when the texts "
        "ahead of it, queued and in the running batch, would take longer than this at the rate the "
        "worker's model has been getting through texts lately. It bounds an accepted text's wait when "
        "the rate falls, as under overload, where a count alone lets the wait grow",
    )
    p.add_argument(
        "--max-request-texts", type=positive_int, default=64, help="most texts in one request (else 413)"
    )
    p.add_argument(
        "--max-text-chars",
        type=positive_int,
        default=4000,
        help="most characters per text (else 413); texts are truncated to the bundle's max length in tokens anyway",
    )
    p.add_argument(
        "--workers",
        type=_workers,
        default="auto",
        help="server processes on the same port, each with its own bundle copy and queue (default auto: "
        f"usable cores / --threads, at most {AUTO_MAX_WORKERS}). 1 worker with all the cores answers a lone "
        "request sooner; one single-thread worker per core serves more under concurrent load",
    )
    p.add_argument(
        "--solo-threads",
        type=_solo_threads,
        default="auto",
        help="ONNX Runtime threads of a batch that runs while no other worker runs one (default auto: every "
        "usable core when there are several workers on the CPU, else off; 0: off). A lone request then "
        "runs on all the cores, as with --workers 1, and concurrent load still gets one worker per core; "
        "each worker holds a second copy of the sessions in memory",
    )
    p.add_argument(
        "--drain-timeout",
        type=_non_negative,
        default=30.0,
        help="on SIGTERM/SIGINT, seconds allowed to finish the accepted requests (default 30)",
    )
    p.add_argument(
        "--drain-delay",
        type=_non_negative,
        default=0.0,
        help="on SIGTERM/SIGINT, seconds to keep answering 503 before closing the port, so a load balancer "
        "sees /health fail first (default 0)",
    )
    _add_connection_arguments(p, positive_int)


def _add_connection_arguments(p: argparse.ArgumentParser, positive_int) -> None:
    """Bounds on what one client connection may hold: time without a request, time per request part, count."""
    p.add_argument(
        "--idle-timeout",
        type=_positive,
        default=5.0,
        help="seconds a connection may stay open without a request in progress, new or kept alive (default 5)",
    )
    p.add_argument(
        "--header-timeout",
        type=_positive,
        default=10.0,
        help="seconds from a request's first byte to the end of its headers, else 408 and close (default 10)",
    )
    p.add_argument(
        "--body-timeout",
        type=_positive,
        default=30.0,
        help="seconds from the end of a request's headers to the end of its body, else 408 and close "
        "(default 30); allow the largest body at your slowest client's upload rate",
    )
    p.add_argument(
        "--write-timeout",
        type=_positive,
        default=30.0,
        help="seconds a connection may go without its client reading any of the answers waiting for it, "
        "once the socket's send buffer is full; then it is aborted (default 30). A client that pipelines "
        "requests and never reads would otherwise hold its connection and buffers forever",
    )
    p.add_argument(
        "--max-connections",
        type=positive_int,
        default=1000,
        help="open connections per worker; a connection beyond it gets 503 and is closed (default 1000). "
        "Keep it under the open-file limit (ulimit -n), which the server raises to its hard limit",
    )


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | str, threads: int | None, cpus: int) -> tuple[int, int]:
    """(workers, ONNX Runtime threads per worker) for ``--workers`` and ``--threads`` on ``cpus`` cores.

    ``auto`` workers: the cores divided by the threads (1 unless given), at most AUTO_MAX_WORKERS;
    threads not given: the cores divided among the workers.

    >>> resolve_workers("auto", None, 2), resolve_workers("auto", None, 16), resolve_workers("auto", 2, 4)
    ((2, 1), (8, 2), (2, 2))
    >>> resolve_workers(1, None, 4), resolve_workers(3, None, 2)
    ((1, 4), (3, 1))
    """
    if workers == "auto":
        workers = max(1, min(AUTO_MAX_WORKERS, cpus // (threads or 1)))
    return workers, threads or max(1, cpus // workers)


def resolve_solo_threads(solo: int | str, workers: int, threads: int, cpus: int, args) -> int:
    """The ``--solo-threads`` count: 0 (off) unless it gives a batch more threads than ``threads``.

    ``auto``: every usable core when several workers run CPU sessions, else 0. One worker has no other
    to yield to (give it the threads with ``--threads``). An explicit count needs per-session threads:
    the shared thread pool and non-CPU providers cannot take it.

    >>> import argparse; a = argparse.Namespace(thread_pool="session", provider="cpu")
    >>> [resolve_solo_threads("auto", w, 1, 2, a) for w in (1, 2)], resolve_solo_threads(1, 2, 1, 2, a)
    ([0, 2], 0)
    """
    per_session = args.thread_pool == "session" and args.provider == "cpu"
    if workers == 1:
        return 0
    if solo == "auto":
        solo = cpus if per_session else 0
    elif solo > threads and not per_session:
        raise UsageError(
            f"--solo-threads {solo} needs --thread-pool session and --provider cpu "
            f"(got --thread-pool {args.thread_pool}, --provider {args.provider})"
        )
    return solo if solo > threads else 0


def settings_from_args(args) -> ServeSettings:
    """Check the flags together and resolve ``--workers auto`` and the thread count (:func:`resolve_workers`)."""
    from .env import check_env_values

    check_env_values(args)
    if args.max_request_texts > args.max_queue_texts:
        raise UsageError(
            f"--max-request-texts {args.max_request_texts} is larger than --max-queue-texts "
            f"{args.max_queue_texts}: such a request could never be queued"
        )
    path = require_bundle(args.bundle)
    name = args.model_name or model_name_of(path)
    if not MODEL_NAME.fullmatch(name):
        raise UsageError(
            f"the bundle folder's name {name!r} is not usable as a model name in /v2/models/NAME paths; "
            "pass --model-name (letters, digits, '.', '_' or '-')"
        )
    cpus = usable_cpus()
    workers, threads = resolve_workers(args.workers, args.threads, cpus)
    return ServeSettings(
        bundle=str(path),
        model_name=name,
        host=args.host,
        port=args.port,
        max_batch_texts=args.max_batch_texts,
        max_batch_tokens=args.max_batch_tokens,
        max_wait_ms=args.max_wait_ms,
        max_queue_texts=args.max_queue_texts,
        max_queue_ms=args.max_queue_ms,
        max_request_texts=args.max_request_texts,
        max_text_chars=args.max_text_chars,
        workers=workers,
        threads=threads,
        solo_threads=resolve_solo_threads(args.solo_threads, workers, threads, cpus, args),
        thread_pool=args.thread_pool,
        provider=args.provider,
        batch_size=args.batch_size,
        drain_timeout=args.drain_timeout,
        drain_delay=args.drain_delay,
        idle_timeout=args.idle_timeout,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        write_timeout=args.write_timeout,
        max_connections=args.max_connections,
        abstain=args.abstain,
    )
