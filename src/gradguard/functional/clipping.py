"""Gradient clipping as small pure functions over `keras.ops`.

Each function takes a list of gradients (entries may be None) and returns a new
list; adaptive modes also take and return their state as plain tensors, so the
same code runs eagerly, inside `tf.function` and under `jax.jit`. The optimizer
wrapper `gradguard.GradientGuard` keeps that state in optimizer variables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from keras import backend, ops

# Brock et al. 2021 (NFNets), section 4: weights with a norm below eps still
# allow updates of size lambda * eps, so zero-initialised units can learn.
AGC_EPS = 1e-3
_TINY = 1e-12  # guards divisions by a norm that may be exactly zero
# Exact power-of-two scales for sums of squares that overflow float32 (see `group_norms`).
_DOWN, _UP = 2.0**-80, 2.0**80


def tensor_square_sums(grads: Sequence) -> object:
    """Sum of squared entries of each gradient tensor (None entries left out): a float32 vector."""
    present = [ops.cast(g, "float32") for g in grads if g is not None]
    if not present:
        return ops.zeros((0,), "float32")
    if backend.backend() == "tensorflow":
        import tensorflow as tf

        # TensorFlow runs Square and Sum as two kernels, the squares written out in between;
        # L2Loss (sum / 2) is one pass (measured in docs/benchmarks.md). Doubling is exact.
        # XLA (JAX) fuses the two by itself.
        return ops.stack([tf.nn.l2_loss(g) for g in present]) * 2.0
    return ops.stack([ops.sum(ops.square(g)) for g in present])


def _present_groups(grads: Sequence, group_of: Sequence[int]):
    ids = [group for g, group in zip(grads, group_of, strict=True) if g is not None]
    return ops.convert_to_tensor(ids, "int32")


def group_square_sums(grads: Sequence, group_of: Sequence[int], n_groups: int) -> object:
    """Sum of squared gradient entries per group (e.g. per layer): a float32 vector.

    `sqrt` of it gives each group's L2 norm; `sqrt` of its sum, the global norm.

    Args:
        grads: gradient tensors; None entries are ignored.
        group_of: the group index of each gradient.
        n_groups: how many groups there are (a group without gradients sums to 0).
    """
    if all(g is None for g in grads):
        return ops.zeros((n_groups,), "float32")
    # One op for all groups (not a stack and a sum per group): a segment sum, never a matmul
    # with a 0/1 matrix, where one tensor's Inf times 0 would make every group NaN.
    return ops.segment_sum(
        tensor_square_sums(grads), _present_groups(grads, group_of), num_segments=n_groups
    )


def lazy_cond(pred, true_fn, false_fn):
    """`ops.cond`: only the branch taken runs; a Python branch on a concrete JAX value.

    Eager JAX turns every `lax.cond` into a fresh compilation (its branches are
    new closures each call): 30 eager guard steps took 37 s instead of 5 s.
    TensorFlow's `ops.cond` already branches in Python when eager.
    """
    if backend.backend() == "jax":
        import jax

        if not isinstance(pred, jax.core.Tracer):
            return true_fn() if bool(pred) else false_fn()
    return ops.cond(pred, true_fn, false_fn)


def group_norms(grads: Sequence, group_of: Sequence[int], n_groups: int):
    """L2 norm of each group of gradients and of all of them, without float32 overflow.

    The plain sum of squares overflows for a finite gradient whose norm is above
    ~1.8e19 (e.g. (3e19, 4e19): 9e38 + 1.6e39 > 3.4e38, the float32 maximum).
    Only then (a `cond`: ordinary steps pay one `isfinite`) the squares are summed
    again with every entry multiplied by 2^-80 and the norm by 2^80: powers of
    two, so both are exact, and the scaled squares of any representable norm sum
    to at most 7.9e28. Entries under 2^17 underflow to 0 there, a relative change
    under 1e-28 each of a sum that is above 3.4e38; groups whose plain sum is
    finite keep it. A fixed power of two, as Blue's algorithm in the BLAS `snrm2`
    scales, not a division by the largest entry: XLA on CPU divides by
    multiplying with the reciprocal, a subnormal flushed to 0 once that entry is
    above ~8.5e37 (JAX gave a norm of 0 for (3e38, 3e38, 3e38)).

    Args:
        grads: gradient tensors; None entries are ignored.
        group_of: the group index of each gradient.
        n_groups: how many groups there are.

    Returns:
        `(norms, total)`: a float32 vector of each group's norm and the float32
        global norm; NaN or Inf entries (or a norm above 3.4e38) give NaN or Inf.

    References:
        Anderson 2017, "Algorithm 978: Safe Scaling in the Level 1 BLAS", ACM
        TOMS 44(1); Blue 1978, "A Portable Fortran Program to Find the Euclidean
        Norm of a Vector", ACM TOMS 4(1).
    """
    (norms,), total = grouped_norms(grads, [(group_of, n_groups)])
    return norms, total


def grouped_norms(grads: Sequence, groupings: Sequence[tuple[Sequence[int], int]]):
    """`group_norms` under several groupings at once, from one pass over the gradients.

    Args:
        grads: gradient tensors; None entries are ignored.
        groupings: `(group_of, n_groups)` pairs, e.g. per layer and per tensor.

    Returns:
        `(norms, total)`: a float32 vector of group norms per grouping, and the
        global norm.
    """
    if all(g is None for g in grads):
        zero = ops.convert_to_tensor(0.0, "float32")
        return [ops.zeros((n,), "float32") for _, n in groupings], zero
    ids = [_present_groups(grads, group_of) for group_of, _ in groupings]

    def norms(per_tensor, scale=1.0):
        sums = [
            ops.segment_sum(per_tensor, i, num_segments=n)
            for i, (_, n) in zip(ids, groupings, strict=True)
        ]
        return [ops.sqrt(s) * scale for s in sums], ops.sqrt(ops.sum(per_tensor)) * scale

    plain_sums = tensor_square_sums(grads)
    plain = norms(plain_sums)

    def rescaled():
        scaled = norms(
            tensor_square_sums(
                [None if g is None else ops.cast(g, "float32") * _DOWN for g in grads]
            ),
            _UP,
        )
        kept = [ops.where(ops.isfinite(p), p, q) for p, q in zip(plain[0], scaled[0], strict=True)]
        return kept, scaled[1]

    return lazy_cond(ops.isfinite(plain[1]), lambda: plain, rescaled)


def global_norm(grads: Sequence) -> object:
    """L2 norm of all gradients taken together: sqrt(sum_i ||g_i||^2), overflow-safe.

    Args:
        grads: gradient tensors; None entries are ignored.

    Returns:
        A float32 scalar tensor (0.0 for no gradients); see `group_norms`.
    """
    return group_norms(grads, [0] * len(grads), 1)[1]


def all_finite(grads: Sequence) -> object:
    """True when no gradient holds a NaN or an Inf (a boolean scalar tensor)."""
    checks = [ops.all(ops.isfinite(g)) for g in grads if g is not None]
    if not checks:
        return ops.convert_to_tensor(True)
    return ops.all(ops.stack(checks))


def scale_to_norm(grads: Sequence, norm, bound) -> list:
    """Scale all gradients by bound / norm when norm > bound, else leave them as they are.

    Pascanu et al. 2013, "On the difficulty of training recurrent neural
    networks", algorithm 1. A `where` rather than a branch: a norm at or under
    the bound (or an infinite bound) multiplies by exactly 1.0.
    """
    factor = ops.where(norm > bound, bound / ops.maximum(norm, _TINY), 1.0)
    return [None if g is None else ops.multiply(g, ops.cast(factor, g.dtype)) for g in grads]


def clip_by_value(grads: Sequence, clip_value: float) -> list:
    """Clip every element to [-clip_value, clip_value]."""
    return [None if g is None else ops.clip(g, -clip_value, clip_value) for g in grads]


def clip_by_norm(grads: Sequence, clip_norm: float, norms=None) -> list:
    """Clip each gradient tensor separately to an L2 norm of at most clip_norm.

    `norms`: each tensor's norm where the caller has it (`grouped_norms` with one
    group per tensor), else computed here.
    """
    if norms is None:
        norms = group_norms(grads, range(len(grads)), len(grads))[0]  # one group per tensor
    return [
        None if g is None else scale_to_norm([g], norms[i], clip_norm)[0]
        for i, g in enumerate(grads)
    ]


def clip_by_global_norm(grads: Sequence, clip_norm: float) -> list:
    """Scale all gradients together so that their global L2 norm is at most clip_norm."""
    return scale_to_norm(grads, global_norm(grads), clip_norm)


# AGC's units by the layer that owns a variable, read from the variable's path
# ("<layers>/<owner>/<name>"). Keras stores kernels with the output axis last, so the
# rule of last resort is "a unit is the last axis; its norm runs over all the others".
# MultiHeadAttention's projections are EinsumDense layers of fixed names and equations:
#   query/key/value  "abc,cde->abde", kernel (in, heads, dim): a unit is a (head, dim) pair,
#                    its fan-in is `in` alone -> norm over axis 0;
#   attention_output "abcd,cde->abe", kernel (heads, dim, out): a unit is `out`
#                    -> norm over axes 0 and 1;
#   their biases, (heads, dim) and (out,): one unit each, as vectors are.
# Depthwise kernels (k..., in, multiplier): an output channel is an (in, multiplier) pair.
# Transposed convolutions (k..., out, in): the output axis is the second to last.
_ATTENTION_FAN_IN = {"query": (0,), "key": (0,), "value": (0,), "attention_output": (0, 1)}
_TRANSPOSED = re.compile(r"conv[123]d_transpose(_\d+)?")
_DEPTHWISE = re.compile(r"depthwise_conv[12]d(_\d+)?")


def unit_axes(path: str, rank: int) -> tuple[int, ...] | None:
    """The axes AGC takes a unit's norm over, for a variable of `path` and `rank`.

    None: the whole tensor is one unit (vectors and scalars, as in NFNets, and the
    biases of attention projections). The table above is the whole rule; a layer it
    does not name (Dense, Conv1D/2D/3D, LSTM and GRU kernels, Embedding, an
    EinsumDense outside attention) gets "all axes but the last".
    """
    parts = path.split("/")
    name, owner = parts[-1], parts[-2] if len(parts) > 1 else ""
    in_attention = len(parts) > 2 and owner in _ATTENTION_FAN_IN
    if rank <= 1 or (in_attention and name == "bias"):
        return None
    if in_attention and rank >= 3:
        return _ATTENTION_FAN_IN[owner]
    if name == "depthwise_kernel" or _DEPTHWISE.fullmatch(owner):
        return tuple(range(rank - 2))
    if _TRANSPOSED.fullmatch(owner):
        return (*range(rank - 2), rank - 1)
    return tuple(range(rank - 1))


def _default_axes(x) -> tuple[int, ...] | None:
    """The rank rule: `unit_axes`' last resort, for a tensor without a path."""
    return unit_axes("", len(x.shape))


def unitwise_norms(tensors: Sequence, axes: Sequence | None = None) -> list:
    """L2 norm of each unit of Keras weights, each broadcastable against its tensor.

    `axes`: per tensor, the axes a unit's norm runs over (`unit_axes`), None for the
    whole tensor. Without it, the rank rule: Keras stores kernels with the output axis
    last (Dense `(in, out)`, Conv2D `(h, w, in, out)`), so a unit is everything but
    the last axis, and vectors (biases, normalisation scales) count as one unit, as
    in NFNets. A unit whose plain sum of squares overflows float32 is summed again
    scaled by 2^-80 (see `group_norms`; one `cond` for all the tensors).
    """
    tensors = [ops.cast(x, "float32") for x in tensors]
    if axes is None:
        axes = [_default_axes(x) for x in tensors]

    def norms(scale=None):
        return [
            ops.sqrt(ops.sum(ops.square(x if scale is None else x * scale), axis=a, keepdims=True))
            for x, a in zip(tensors, axes, strict=True)
        ]

    plain = norms()
    finite = ops.all(ops.stack([ops.all(ops.isfinite(n)) for n in plain]))

    def rescaled():
        scaled = [norm * _UP for norm in norms(_DOWN)]
        return [ops.where(ops.isfinite(n), n, r) for n, r in zip(plain, scaled, strict=True)]

    return lazy_cond(finite, lambda: plain, rescaled) if tensors else []


def unitwise_norm(x, axes: tuple[int, ...] | None = None) -> object:
    """`unitwise_norms` of one tensor (the rank rule unless `axes` is given)."""
    return unitwise_norms([x], None if axes is None else [axes])[0]


def adaptive_clip(
    grads: Sequence,
    weights: Sequence,
    clip_factor: float,
    excluded: Sequence[bool] | None = None,
    eps: float = AGC_EPS,
    axes: Sequence | None = None,
) -> list:
    """Adaptive gradient clipping (AGC), unit-wise.

    Each unit's gradient G_i is rescaled so that ||G_i|| <= clip_factor * max(||W_i||, eps).

    Args:
        grads: gradients, one per weight (None entries pass through).
        weights: the weights the gradients belong to (tensors or variables).
        clip_factor: lambda in the paper; 0.01 suits batch sizes up to ~4096.
        excluded: per weight, True to leave its gradient unclipped (NFNets
            leave the final classifier alone).
        eps: the smallest weight norm used for the bound.
        axes: per weight, the axes of a unit's norm (`unit_axes` of its path; None
            for the whole tensor); by default the rank rule of `unitwise_norms`.

    Returns:
        The clipped gradients.

    References:
        Brock, De, Smith and Simonyan 2021, "High-Performance Large-Scale Image
        Recognition Without Normalization", section 4.1.
    """
    excluded = excluded or [False] * len(grads)
    clipped = list(grads)
    chosen = [i for i, g in enumerate(grads) if g is not None and not excluded[i]]
    if axes is None:
        axes = [_default_axes(w) for w in weights]
    chosen_axes = [axes[i] for i in chosen]
    grad_norms = unitwise_norms([grads[i] for i in chosen], chosen_axes)
    weight_norms = unitwise_norms([weights[i] for i in chosen], chosen_axes)
    for i, grad_norm, weight_norm in zip(chosen, grad_norms, weight_norms, strict=True):
        max_norm = ops.multiply(ops.maximum(weight_norm, eps), clip_factor)
        factor = ops.divide(max_norm, ops.maximum(grad_norm, max_norm))
        clipped[i] = ops.multiply(grads[i], ops.cast(factor, grads[i].dtype))
    return clipped
