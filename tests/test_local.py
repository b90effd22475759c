"""gradguard.training.local: the local process count, a free port, and one cluster's environment."""

from __future__ import annotations

import socket

import pytest

from gradguard.errors import ClusterError
from gradguard.training.local import (
    LOCAL_WORKERS,
    cluster_environment,
    free_port,
    local_worker_count,
)


@pytest.mark.parametrize("value, count", [(None, 1), ("1", 1), ("3", 3)])
def test_the_local_worker_count_is_the_variable_or_one(value, count):
    environ = {} if value is None else {LOCAL_WORKERS: value}
    assert local_worker_count(environ) == count


@pytest.mark.parametrize("value", ["0", "-2", "two", ""])
def test_a_bad_local_worker_count_is_one_line_naming_the_variable(value):
    with pytest.raises(ClusterError) as error:
        local_worker_count({LOCAL_WORKERS: value})
    assert str(error.value) == f"{LOCAL_WORKERS}={value!r}: expected a process count >= 1"


def test_a_free_port_can_be_bound():
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))  # raises if something holds it
    assert 0 < port < 65536


def test_local_workers_set_the_count_and_drop_any_cluster_already_in_the_environment():
    old = {"JAX_PROCESS_ID": "3", "JAX_NUM_PROCESSES": "4", "PATH": "/bin"}
    env = cluster_environment(2, None, None, None, old)
    assert env == {"PATH": "/bin", LOCAL_WORKERS: "2"}
    with pytest.raises(ClusterError, match="--workers 0: expected a process count >= 1"):
        cluster_environment(0, None, None, None, old)


def test_hosts_get_the_three_jax_variables_checked():
    env = cluster_environment(None, "10.0.0.1:12355", 2, 1, {LOCAL_WORKERS: "2"})
    assert env == {
        "JAX_COORDINATOR_ADDRESS": "10.0.0.1:12355",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": "1",
    }
    with pytest.raises(ClusterError, match="JAX_PROCESS_ID=2 with JAX_NUM_PROCESSES=2"):
        cluster_environment(None, "h:1", 2, 2, {})
    with pytest.raises(ClusterError, match="--coordinator needs --processes"):
        cluster_environment(None, "h:1", None, None, {})
