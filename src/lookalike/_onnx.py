"""onnxruntime sessions, opened one way for every model lookalike runs (embedder, segmenter)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from lookalike.errors import MissingDependency


def session_options(threads: int | None) -> Any:
    """CPU options shared by every lookalike session: all graph optimisations, the graph's nodes run
    one after the other (parallelism comes from the intra-op threads), `threads` intra-op threads
    (None: onnxruntime's default, one per core), and threads that sleep rather than spin once a run
    is over: on 2 cores, the idle spinning of one model's threads took the CPU from the model running
    beside it (the two-image embedding went from 65 ms to 48-56 ms without it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def open_session(model: bytes | str | Path, threads: int | None, feature: str = "running models") -> Any:
    """An onnxruntime CPU session of a model file or its bytes."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise MissingDependency("onnxruntime", feature)
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, session_options(threads), providers=["CPUExecutionProvider"])
