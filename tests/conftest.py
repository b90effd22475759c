"""Shared fixtures: tiny params and a tiny data set so stage tests take seconds."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import yaml

from gradguard import native_log

# TensorFlow's start-up lines (native code, see gradguard/native_log.py) stay out of the output.
with native_log.filtered():
    import keras

    if keras.backend.backend() == "tensorflow":
        # Two logical CPUs for the MirroredStrategy tests; must precede any TensorFlow op.
        # Listing the devices tries CUDA: `E0000 ... failed call to cuInit` without a GPU.
        import tensorflow as tf

        _cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
        )

ROOT = Path(__file__).resolve().parents[1]

TINY_PARAMS = {
    "seed": 7,
    "augment": {"copies": 1, "rotation": 8.0, "shift": 0.05, "zoom": 0.05},
    "data": {"image_size": 12},
    "model": {"filters": [4], "dense": 8, "dropout": 0.0},
    "train": {"batch_size": 64, "epochs": 2, "patience": 1, "learning_rate": 0.01},
}


tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow backend only"
)


@pytest.fixture
def tiny_params_file(tmp_path):
    """A params.yaml that trains a 4-filter CNN on 12x12 digits for 2 epochs."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(TINY_PARAMS))
    return path


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory):
    """The end-to-end tests' template repository (tests/e2e.py), one per session."""
    from tests.e2e import template

    # The base temporary folder's parent is shared by every pytest-xdist worker.
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return template(shared)


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of 10 images of 2x2x1 (40 bytes of pixels each)."""
    from gradguard.data import shards

    monkeypatch.setattr(shards, "SHARD_BYTES", 40)


@pytest.fixture
def tensor():
    """Float32 tensor from a list."""
    return lambda values: keras.ops.convert_to_tensor(np.asarray(values, "float32"))


@pytest.fixture
def plan():
    """The committed compare.yaml, parsed."""
    from gradguard.experiments.plan import parse_plan

    return parse_plan(yaml.safe_load((ROOT / "compare.yaml").read_text()))


@pytest.fixture
def raw_params():
    """The committed params.yaml, as YAML reads it."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())
