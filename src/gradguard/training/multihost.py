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
Without these variables, `initialize()` (`ALONE`) trains data-parallel over this
process's own devices (several GPUs of one host).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradguard.errors import ClusterError

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


ALONE = Cluster(coordinator="", processes=1, process=0)  # one process: no cluster to join


def cluster_from_env(environ=os.environ) -> Cluster:
    """The cluster the environment describes.

    Raises:
        ClusterError: one line naming the variable that is missing or malformed.
    """
    missing = [name for name in ENV if not environ.get(name)]
    if missing:
        raise ClusterError(
            f"multi-host training needs {', '.join(missing)} in the environment "
            "(the coordinator's host:port, the process count, this process's id)"
        )
    try:
        processes, process = int(environ[ENV[1]]), int(environ[ENV[2]])
    except ValueError as error:
        raise ClusterError(f"{ENV[1]}/{ENV[2]} must be integers ({error})") from error
    if not (processes >= 1 and 0 <= process < processes):
        raise ClusterError(
            f"JAX_PROCESS_ID={process} with JAX_NUM_PROCESSES={processes}; expected 0 <= id < count"
        )
    return Cluster(environ[ENV[0]], processes, process)


def use_jax_backend() -> None:
    """Make Keras load its JAX backend; call before Keras is imported.

    Raises:
        ClusterError: Keras is already loaded on another backend, or
            KERAS_BACKEND names another one.
    """
    import importlib.util

    if importlib.util.find_spec("jax") is None:
        raise ClusterError("multi-host training needs JAX, which is not installed (`uv sync`)")
    if "keras" in sys.modules:
        import keras

        backend = keras.backend.backend()
    else:
        backend = os.environ.setdefault("KERAS_BACKEND", "jax")
    if backend != "jax":
        raise ClusterError(
            f"multi-host training runs on Keras's JAX backend; this is {backend!r} "
            "(unset KERAS_BACKEND or set it to jax)"
        )


def initialize(cluster: Cluster = ALONE):
    """Make Keras train data-parallel over every process's devices.

    Call before building the model. With a cluster, first join it: each process
    then feeds its own share of every global batch (`auto_shard_dataset` is off:
    the shares are the caller's, e.g. `ShardSequence(..., full_batches=True,
    process=cluster.process, processes=cluster.processes)`). Without one, the
    batches are split over this process's devices.

    Returns:
        The `keras.distribution.DataParallel` now in force.
    """
    use_jax_backend()
    import jax
    import keras

    if cluster.processes > 1:
        # CPU devices' collectives (GPUs use NCCL whatever this says). Asking JAX for its
        # backend first would start it, which must wait for initialize().
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=cluster.coordinator,
            num_processes=cluster.processes,
            process_id=cluster.process,
        )
        from jax.experimental import multihost_utils

        # The first collective connects the processes; Gloo then reports it on standard
        # output, which belongs to the caller: it goes to standard error instead.
        with _stdout_to_stderr():
            multihost_utils.sync_global_devices("gradguard.training.multihost.initialize")
    distribution = keras.distribution.DataParallel()
    distribution.auto_shard_dataset = False
    keras.distribution.set_distribution(distribution)
    return distribution


@contextlib.contextmanager
def _stdout_to_stderr():
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def shutdown(cluster: Cluster) -> None:
    """Leave the cluster: a barrier every process must reach (JAX would at exit)."""
    if cluster.processes > 1:
        import jax

        jax.distributed.shutdown()


def check_agreement(values, what: str) -> None:
    """Raise unless every process holds the same `values` (e.g. a digest of the weights).

    Under SPMD every process must hold identical replicated state; a process that
    started from other weights (a resume state that did not reach it) would train
    on silently. Every process must call this.

    Raises:
        ClusterError: naming the processes whose values differ from process 0's.
    """
    from jax.experimental import multihost_utils

    local = np.asarray(values, np.float64).ravel()
    gathered = np.asarray(multihost_utils.process_allgather(local)).reshape(-1, local.size)
    differ = [p for p in range(1, len(gathered)) if not np.array_equal(gathered[p], gathered[0])]
    if differ:
        raise ClusterError(f"processes {differ} hold other {what} than process 0")


def broadcast_folder(folder: str | os.PathLike, *, source: bool) -> None:
    """Give every process process 0's copy of `folder` (e.g. a resume state).

    Every process of the cluster must call this; `source` is true on process 0
    alone. A folder process 0 lacks is removed on the others. The files travel
    as one tar archive over JAX's own collectives.
    """
    import shutil

    from jax.experimental import multihost_utils

    folder = Path(folder)
    payload = b""
    if source and folder.is_dir():
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            archive.add(folder, arcname=".")
        payload = buffer.getvalue()
    size = int(multihost_utils.broadcast_one_to_all(np.array(len(payload), np.int64)))
    data = np.frombuffer(payload, np.uint8) if source else np.zeros(size, np.uint8)
    if size:
        data = np.asarray(multihost_utils.broadcast_one_to_all(data))
    if source:
        return
    shutil.rmtree(folder, ignore_errors=True)
    if size:
        folder.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(data.tobytes()), mode="r") as archive:
            archive.extractall(folder, filter="data")
