"""Data-parallel training across processes and hosts on Keras's JAX distribution API.

The engine is Keras 3's own (`keras.distribution.DataParallel` on the JAX
backend, JAX's multi-process runtime underneath): every process holds the
whole model, feeds its share of each global batch, and XLA all-reduces the
gradients. Under this SPMD model the gradient `GradientGuard` sees is already
the global one, so its clipping, skip decision and statistics are the same on
every process and equal to a one-process run with the same global batch.

The cluster is read from the environment JAX documents for
`jax.distributed.initialize`:

    JAX_COORDINATOR_ADDRESS   host:port of process 0 (reachable from every host)
    JAX_NUM_PROCESSES         how many processes in all
    JAX_PROCESS_ID            this process's number, 0 .. JAX_NUM_PROCESSES - 1

On CPU the collectives go through Gloo, which needs nothing installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


@dataclass(frozen=True)
class Cluster:
    coordinator: str
    processes: int
    process: int

    @property
    def chief(self) -> bool:
        """Process 0 writes the outputs; the others write to temporary folders."""
        return self.process == 0


def cluster_from_env(environ=os.environ) -> Cluster:
    """The cluster the environment describes.

    Raises:
        ValueError: one line naming the variable that is missing or malformed.
    """
    missing = [name for name in ENV if not environ.get(name)]
    if missing:
        raise ValueError(
            f"multi-host training needs {', '.join(missing)} in the environment "
            "(the coordinator's host:port, the process count, this process's id)"
        )
    try:
        processes, process = int(environ[ENV[1]]), int(environ[ENV[2]])
    except ValueError as error:
        raise ValueError(f"{ENV[1]}/{ENV[2]} must be integers ({error})") from error
    if not (processes >= 1 and 0 <= process < processes):
        raise ValueError(
            f"JAX_PROCESS_ID={process} with JAX_NUM_PROCESSES={processes}; expected 0 <= id < count"
        )
    return Cluster(environ[ENV[0]], processes, process)


def initialize(cluster: Cluster):
    """Join the cluster and make Keras train data-parallel over every process's devices.

    Call before building the model. Each process then feeds its own slice of
    every global batch (`auto_shard_dataset` is off: the slices are the
    caller's, e.g. `ShardSequence(..., process=cluster.process,
    processes=cluster.processes)`).

    Returns:
        The `keras.distribution.DataParallel` now in force.
    """
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise ValueError(
            f"multi-host training runs on the JAX backend; this is {keras.backend.backend()!r} "
            "(set KERAS_BACKEND=jax)"
        )
    # CPU devices' collectives (GPUs use NCCL whatever this says). Asking JAX for its
    # backend first would start it, which must wait for initialize().
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=cluster.coordinator,
        num_processes=cluster.processes,
        process_id=cluster.process,
    )
    distribution = keras.distribution.DataParallel()
    distribution.auto_shard_dataset = False
    keras.distribution.set_distribution(distribution)
    return distribution
