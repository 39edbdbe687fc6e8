"""``--engine ray``: the same predictors on Ray Data, with the same results, artefacts and output as the local engine.

The inputs (files, webdataset samples, dataset rows: picklable :class:`clipkit.runner.Input` records) become a Ray
dataset; decoding runs as stateless ``map_batches`` tasks (the runner's own decode: draft JPEGs, ``--max-side``,
the predictor's transform, error records), and prediction as ``map_batches`` over a stateful callable class that
builds one predictor (one model) per actor, ``concurrency`` actors, ``num_gpus`` each when the cluster has GPUs.
Results come back to this process in input order (``preserve_order``), where artefacts and the sink are written
exactly as by the local engine (:func:`clipkit.runner.deliver`): one writer, so ``--resume``, ``--coco`` and the
stem rule behave the same. The connection: ``ray.init()``, which joins the cluster named by ``$RAY_ADDRESS`` or
starts a local runtime on this machine.

Deviation from a pure Ray pipeline, on purpose: the driver lists the inputs (so ``--shard``, ``--resume`` and the
artefact names are the runner's) and receives every result (label maps included) — fine for millions of inputs on
one driver, not for a collection whose results do not fit the driver's bandwidth (see docs/scale.md).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from clipkit.errors import UsageError

_PROTOCOL = 5


def ray_module() -> Any:
    """``ray`` with Ray Data, or a one-line usage error saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError("--engine ray needs Ray Data: pip install 'clipkit[ray]' (ray[data])") from None
    return ray


def connect(quiet: bool = True) -> Any:
    """The Ray runtime: the one already initialised, the cluster at ``$RAY_ADDRESS``, or a new local one."""
    ray = ray_module()
    if not ray.is_initialized():
        options: dict[str, Any] = {"logging_level": logging.ERROR if quiet else logging.WARNING,
                                   "log_to_driver": not quiet}
        if not os.environ.get("RAY_ADDRESS"):
            options["include_dashboard"] = False
        ray.init(**options)
    return ray


def _column(batch: Any, name: str) -> list[bytes]:
    return batch.column(name).to_pylist()


def _table(name: str, blobs: list[bytes]) -> Any:
    import pyarrow as pa

    return pa.table({name: pa.array(blobs, type=pa.large_binary())})


MAX_CPU_ACTORS = 4  # default CPU-only actor count: one model each, so their memory bounds it


def default_cpu_actors(resources: dict[str, float]) -> int:
    """Predictor actors on a cluster without GPUs: one per CPU (each actor runs torch on one thread, decoding
    fused into it), at most :data:`MAX_CPU_ACTORS`."""
    return max(1, min(int(resources.get("CPU", 1)), MAX_CPU_ACTORS))


class _Decode:
    """A Ray ``map_batches`` function: rows of pickled inputs → rows of pickled Samples (or ErrorRecords)."""

    def __init__(self, transform: Any, keep_image: bool, max_side: int | None, short_side: int | None):
        self.transform, self.keep_image, self.max_side, self.short_side = transform, keep_image, max_side, short_side

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from clipkit.runner import _Decoded

        inputs = [pickle.loads(blob) for blob in _column(batch, "input")]
        decoded = _Decoded(inputs, self.transform, self.keep_image, self.max_side, self.short_side)
        return _table("entry", [pickle.dumps(decoded[i], _PROTOCOL) for i in range(len(inputs))])


class _Predict:
    """A Ray ``map_batches`` callable class: one predictor (one model) per actor, built by ``factory()``."""

    def __init__(self, factory: Callable[[], Any], keep_image: bool):
        from clipkit.device import keep_freed_memory

        keep_freed_memory()
        self.predictor = factory()
        self.keep_image = keep_image

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from clipkit.runner import predict_batch

        entries = [pickle.loads(blob) for blob in _column(batch, "entry")]
        out = []
        for entry, result in predict_batch(self.predictor, entries):
            if hasattr(entry, "pixels"):  # a Sample: only its image travels back, and only when it is drawn on
                entry.pixels = None
                if not self.keep_image:
                    entry.image = None
            out.append(pickle.dumps((entry, result), _PROTOCOL))
        return _table("result", out)


def run(factory: Callable[[], Any], predictor: Any, items: Sequence[Any], *, batch_size: int = 1,
        keep_image: bool = False, max_side: int | None = None, concurrency: int | None = None,
        num_gpus: float | None = None, quiet: bool = True, on_result: Any = None) -> Iterator[Any]:
    """Yield one result (or ErrorRecord) per item, in order, computed on Ray Data (see the module docstring).

    ``factory()`` builds the predictor inside each actor; ``predictor`` (built here) gives the transform run by the
    decoding tasks. ``concurrency``: prediction actors (default: one per GPU of the cluster, else
    :func:`default_cpu_actors`); ``num_gpus``: GPUs per actor (default: 1 when the cluster has GPUs, else 0).
    Without GPUs Ray fuses the decoding into the actors (same resources); with GPUs decoding stays in CPU tasks.
    """
    from clipkit.runner import deliver

    if not items:
        return
    if any(not item.portable for item in items):
        raise UsageError("--engine ray reads inputs in other processes: give files or datasets, not in-memory "
                         "images")
    ray = connect(quiet)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = not quiet
    if quiet:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0)
    per_actor = num_gpus if num_gpus is not None else (1 if gpus else 0)
    actors = concurrency or (max(1, int(gpus // per_actor)) if per_actor else default_cpu_actors(resources))
    keep = keep_image or predictor.keep_image
    short = None if keep else getattr(predictor, "decode_short_side", None)
    rows = [{"input": pickle.dumps(item, _PROTOCOL)} for item in items]
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // max(batch_size, 1), 200)))
    dataset = dataset.map_batches(_Decode(predictor.transform, keep, max_side, short), batch_size=batch_size,
                                  batch_format="pyarrow")
    dataset = dataset.map_batches(_Predict, fn_constructor_args=(factory, keep), batch_size=batch_size,
                                  batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
                                  num_gpus=per_actor or None)
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for blob in _column(batch, "result"):
            entry, result = pickle.loads(blob)
            yield deliver(result, entry, on_result)
