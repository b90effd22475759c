"""Ops a compiled train step runs: TensorFlow graph nodes, or JAX jaxpr equations.

A count is free of machine noise and predicts the launch cost of a step on a GPU,
where each small op is a kernel launch. `count_step_ops(optimizer)` traces one
train step of the default CNN with `optimizer` and counts its ops, nested
functions (TensorFlow's cond branches, JAX's cond/while bodies) included, both
branches of a cond alike; on TensorFlow, nodes that launch no kernel (`NO_KERNEL`:
constants, inputs, identities) are left out. The guard's cost is its count minus
that of the same step without clipping.

    python benchmarks/op_count.py          # TensorFlow
    KERAS_BACKEND=jax python benchmarks/op_count.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from gradguard import GradientGuard
from gradguard.params import ModelParams
from gradguard.training.families import build_cnn

FIGURES = Path(__file__).with_name("op_counts.json")  # the committed counts (tests/test_op_count)
# Graph nodes that launch no kernel: constants, the function's inputs, pass-throughs.
NO_KERNEL = frozenset({"Const", "Placeholder", "Identity", "IdentityN", "NoOp"})
MODES = ("none", "value", "norm", "global_norm", "agc", "autoclip", "zscore")


def variants() -> dict:
    """Name -> a factory of the optimizer: Keras with and without clipping, every guard mode."""
    adam = lambda **kw: keras.optimizers.Adam(1e-3, **kw)  # noqa: E731
    bounds = {"value": {"clip_value": 0.01}, "norm": {"clip_norm": 1.0}}
    bounds["global_norm"] = {"clip_norm": 1.0}
    found = {
        "adam, no clipping": lambda: adam(),
        "adam, keras global_clipnorm=1": lambda: adam(global_clipnorm=1.0),
    }
    for mode in MODES:
        found[f"guard {mode}"] = lambda mode=mode: GradientGuard(
            adam(), mode=mode, **bounds.get(mode, {})
        )
    return found


def _model(optimizer, batch: int = 8):
    model = build_cnn((28, 28, 1), 10, ModelParams(filters=(32, 64), dense=128), seed=0)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    model.train_on_batch(x, y)  # builds the optimizer's variables
    return model, (x, y)


def _tf_ops(model, data) -> int:
    import tensorflow as tf

    graph = tf.function(model.train_step).get_concrete_function(data).graph.as_graph_def()
    nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
    return sum(1 for node in nodes if node.op not in NO_KERNEL)


def _jaxpr_eqns(jaxpr) -> int:
    from jax.extend import core

    count = 0
    for eqn in jaxpr.eqns:
        count += 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, list | tuple) else [value]:
                if isinstance(sub, core.ClosedJaxpr):
                    count += _jaxpr_eqns(sub.jaxpr)
                elif isinstance(sub, core.Jaxpr):
                    count += _jaxpr_eqns(sub)
    return count


def _jax_eqns(model, data) -> int:
    import jax

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    return _jaxpr_eqns(jax.make_jaxpr(model.train_step)(state, data).jaxpr)


def count_step_ops(optimizer) -> int:
    """Ops of one traced train step of the default CNN with `optimizer` (this backend's)."""
    model, data = _model(optimizer)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf_ops(model, data)
    if backend == "jax":
        return _jax_eqns(model, data)
    raise ValueError(f"op counts are for the tensorflow and jax backends; this is {backend!r}")


def count_all() -> dict[str, int]:
    return {name: count_step_ops(factory()) for name, factory in variants().items()}


def main() -> None:
    counts = count_all()
    base = counts["adam, no clipping"]
    keras_added = counts["adam, keras global_clipnorm=1"] - base
    backend = keras.backend.backend()
    unit = "graph ops" if backend == "tensorflow" else "jaxpr equations"
    print(f"backend {backend}: {unit} of one train step of the default CNN (10 variables)\n")
    print("| variant | ops | added to no clipping | vs Keras's added |")
    print("|---|---:|---:|---:|")
    for name, count in counts.items():
        added = count - base
        ratio = f"{added / keras_added:.1f}x" if keras_added else "-"
        print(f"| {name} | {count} | {added} | {ratio} |")
    if "--write" in sys.argv:
        figures = json.loads(FIGURES.read_text()) if FIGURES.is_file() else {}
        figures[backend] = counts
        FIGURES.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
        print(f"\nwrote {FIGURES}")


if __name__ == "__main__":
    main()
