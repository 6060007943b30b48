"""Data parallelism over devices and processes, on JAX's own machinery.

A run on ``d`` devices builds a one-axis ``jax.sharding.Mesh`` named ``"data"``. Each global
batch of ``B`` rows is sharded along it (``NamedSharding(mesh, P("data"))``: device ``i``
holds rows ``[i B/d, (i+1) B/d)``), parameters and optimizer state are replicated
(``NamedSharding(mesh, P())``), and the step is one ``jax.jit`` with those shardings: XLA's
SPMD partitioner runs the forward and backward pass on each slice and inserts the all-reduce
that sums the gradient (the mean over ``B`` rows is a sum of per-device partial sums). The
result is the single-device step's up to the order of that sum.

Several processes (hosts) join through ``jax.distributed.initialize``: the mesh then holds
the devices of every process, process-major, so each process's devices hold one contiguous
block of rows, and each process builds only that block
(``jax.make_array_from_process_local_data``). Files are written by process 0 only
(``is_writer``); every process runs every step, evaluation included, since they are
collectives.

Environment (flags win): ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0, read by JAX
itself), ``JAXCNN_NUM_PROCESSES``, ``JAXCNN_PROCESS_ID``. What is missing JAX takes from a
cluster it recognises (Slurm, Open MPI, Kubernetes, Cloud TPU).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcnn import _args
from jaxcnn._compat import distributed_is_initialized

__all__ = ["DATA_AXIS", "ENV_COORDINATOR", "ENV_NUM_PROCESSES", "ENV_PROCESS_ID", "DataParallel",
           "initialize", "data_parallel", "is_writer", "host"]

DATA_AXIS = "data"
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAXCNN_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXCNN_PROCESS_ID"


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Join a multi-process run: ``jax.distributed.initialize`` with the given values, else
    the environment's. Returns whether it joined one now; nothing is done (False) when
    nothing is given or this process already joined. Call it before any other JAX work.

    CPU collectives go through gloo where none is chosen (JAX's CPU backend has no other
    cross-process implementation on every platform).
    """
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    num_processes = _args.optional_index(num_processes if num_processes is not None
                                   else os.environ.get(ENV_NUM_PROCESSES), "num_processes", 1)
    process_id = _args.optional_index(process_id if process_id is not None
                                else os.environ.get(ENV_PROCESS_ID), "process_id", 0)
    if (coordinator, num_processes, process_id) == (None, None, None) or distributed_is_initialized():
        return False
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise ValueError(f"process_id: expected 0 ... {num_processes - 1} (--num-processes "
                         f"{num_processes}); got {process_id}")
    if jax.config.jax_cpu_collectives_implementation in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return True


def is_writer() -> bool:
    """Whether this process writes the run's files (metrics, checkpoint, report, plots)."""
    return jax.process_index() == 0


def _mesh_devices(request: int | str | None) -> list[jax.Device]:
    """The mesh's devices, process-major: every device for ``"all"``, else the first
    ``request / processes`` devices of each process (one device when ``None`` in one process,
    every device when ``None`` in several)."""
    request = _args.device_request(request)
    processes = jax.process_count()
    if request is None:
        request = 1 if processes == 1 else "all"
    by_process = [sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
                  for p in range(processes)]
    if request == "all":
        return [d for local in by_process for d in local]
    if request > jax.device_count():
        hint = (" (XLA_FLAGS=--xla_force_host_platform_device_count=N splits a CPU into N)"
                if jax.devices()[0].platform == "cpu" else "")
        raise ValueError(f"devices: expected at most the {jax.device_count()} devices JAX sees "
                         f"({jax.devices()[0].platform}, {processes} process(es)){hint}; got {request}")
    _args.check_splits_evenly(request, processes, "processes (each brings the same number of devices)",
                        "devices")
    per_process = request // processes
    if per_process > min(len(local) for local in by_process):
        raise ValueError(f"devices: expected at most {min(len(local) for local in by_process)} "
                         f"devices per process; got {request} over {processes} processes")
    return [d for local in by_process for d in local[:per_process]]


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """A ``"data"`` mesh and the two shardings of data parallelism: batches split along the
    mesh, everything else replicated."""

    mesh: Mesh

    @property
    def size(self) -> int:
        """The number of devices."""
        return int(self.mesh.devices.size)

    @property
    def batch_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def check_batch(self, batch_size: int, micro_batches: int = 1) -> None:
        """A global batch must split evenly over the devices, and each device's share over the
        micro-batches."""
        _args.check_splits_evenly(batch_size, self.size, f"devices (--devices {self.size})")
        if micro_batches > 1:
            _args.check_splits_evenly(batch_size, self.size * micro_batches,
                                      f"slices (--devices {self.size} × --micro-batches {micro_batches})")

    def process_rows(self, rows: int) -> slice:
        """This process's rows of a global batch of ``rows`` (all of them in one process)."""
        starts_stops = [(index[0].start or 0, rows if index[0].stop is None else index[0].stop)
                        for index in self.batch_sharding.addressable_devices_indices_map((rows,)).values()]
        return slice(min(s for s, _ in starts_stops), max(e for _, e in starts_stops))

    def batch(self, local: Any, rows: int) -> jax.Array:
        """The global ``(rows, ...)`` batch array of which this process holds ``local``
        (``process_rows(rows)`` of it), sharded along the mesh."""
        local = np.asarray(local)
        return jax.make_array_from_process_local_data(self.batch_sharding, local, (rows, *local.shape[1:]))

    def replicate(self, tree: Any) -> Any:
        """Every leaf (host or device, the same value in every process) replicated on the
        mesh. PRNG key leaves stay keys."""
        def put(leaf: Any) -> jax.Array:
            if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                return jax.random.wrap_key_data(put(jax.random.key_data(leaf)),
                                                impl=jax.random.key_impl(leaf))
            value = np.asarray(leaf)
            return jax.make_array_from_callback(value.shape, self.replicated, lambda index: value[index])
        return jax.tree_util.tree_map(put, tree)


def data_parallel(devices: int | str | None = None) -> DataParallel:
    """The data-parallel layout over ``devices``: a count, ``"all"``, or ``None`` (one device
    in a single process, every device in a multi-process run)."""
    return DataParallel(Mesh(np.array(_mesh_devices(devices)), (DATA_AXIS,)))


def host(tree: Any) -> Any:
    """Every leaf as a host numpy array (replicated leaves read from this process's copy)."""
    return jax.tree_util.tree_map(np.asarray, tree)
