"""Clipping functions on 2-4 element tensors, numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from keras import ops

from gradguard.functional import clipping


def numpy(values):
    return [np.asarray(ops.convert_to_numpy(v)) for v in values]


def test_global_norm_of_3_4_and_12_is_13(tensor):
    # sqrt(3^2 + 4^2 + 12^2) = sqrt(169) = 13; None entries are ignored.
    norm = clipping.global_norm([tensor([3.0, 4.0]), None, tensor([[12.0]])])
    assert float(norm) == pytest.approx(13.0)


def test_global_norm_clipping_3_4_to_unit_norm_gives_0_6_0_8(tensor):
    (clipped,) = numpy(clipping.clip_by_global_norm([tensor([3.0, 4.0])], 1.0))
    np.testing.assert_allclose(clipped, [0.6, 0.8], rtol=1e-6)


def test_global_norm_clipping_scales_all_tensors_together(tensor):
    # norm 13 -> factor 6.5 / 13 = 0.5 on every tensor.
    a, b = numpy(clipping.clip_by_global_norm([tensor([3.0, 4.0]), tensor([12.0])], 6.5))
    np.testing.assert_allclose(a, [1.5, 2.0], rtol=1e-6)
    np.testing.assert_allclose(b, [6.0], rtol=1e-6)


def test_clipping_twice_changes_nothing_and_post_clip_norm_equals_bound(tensor):
    once = clipping.clip_by_global_norm([tensor([3.0, 4.0]), tensor([1.0, -2.0])], 2.0)
    twice = clipping.clip_by_global_norm(once, 2.0)
    assert float(clipping.global_norm(once)) == pytest.approx(2.0, rel=1e-6)
    for a, b in zip(numpy(once), numpy(twice), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_a_norm_under_the_bound_is_left_bit_identical(tensor):
    grads = [tensor([0.3, -0.4])]
    (clipped,) = numpy(clipping.clip_by_global_norm(grads, 1.0))
    np.testing.assert_array_equal(clipped, numpy(grads)[0])


def test_value_clipping_minus_2_and_0_1_at_0_5(tensor):
    (clipped,) = numpy(clipping.clip_by_value([tensor([-2.0, 0.1])], 0.5))
    np.testing.assert_allclose(clipped, [-0.5, 0.1], rtol=1e-6)


def test_per_tensor_norm_clipping_treats_each_tensor_alone(tensor):
    # [3, 4] has norm 5 -> [0.6, 0.8]; [0.1] has norm 0.1 <= 1 -> unchanged.
    a, b = numpy(clipping.clip_by_norm([tensor([3.0, 4.0]), tensor([0.1])], 1.0))
    np.testing.assert_allclose(a, [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(b, [0.1], rtol=1e-6)


def test_norms_of_a_finite_gradient_whose_squares_overflow_float32(tensor):
    # 3e19^2 + 4e19^2 = 2.5e39 > 3.4e38 (float32 max); the norm, 5e19, is not.
    big = tensor([3e19, 4e19])
    assert float(clipping.global_norm([big])) == pytest.approx(5e19, rel=1e-6)
    # Groups [3e19] and [4e19, 1]: 3e19 and 4e19 (1 is lost in float32), total 5e19.
    norms, total = clipping.group_norms(
        [tensor([3e19]), tensor([4e19]), tensor([1.0])], [0, 1, 1], 2
    )
    np.testing.assert_allclose(numpy([norms])[0], [3e19, 4e19], rtol=1e-6)
    assert float(total) == pytest.approx(5e19, rel=1e-6)
    # Clipped to 1: (0.6, 0.8), by the global norm and by each tensor's norm alike.
    for clipped in (clipping.clip_by_global_norm([big], 1.0), clipping.clip_by_norm([big], 1.0)):
        np.testing.assert_allclose(numpy(clipped)[0], [0.6, 0.8], rtol=1e-6)


def test_rescaled_norms_still_report_nan_and_inf(tensor):
    assert math.isnan(float(clipping.global_norm([tensor([math.nan, 1.0])])))
    assert math.isinf(float(clipping.global_norm([tensor([math.inf, 1.0])])))
    assert math.isinf(float(clipping.global_norm([tensor([3e38, 3e38, 3e38])])))  # 5.2e38


def test_agc_scales_an_overflowing_unit_to_its_bound(tensor):
    # Grad columns (3e19, 4e19): norm 5e19 (squares overflow) and (0, 1): norm 1.
    # Weight columns norms 5 and 1, lambda 0.1: bounds 0.5 and 0.1.
    grad, weight = tensor([[3e19, 0.0], [4e19, 1.0]]), tensor([[3.0, 0.0], [4.0, 1.0]])
    np.testing.assert_allclose(numpy([clipping.unitwise_norm(grad)])[0], [[5e19, 1.0]], rtol=1e-6)
    (clipped,) = numpy(clipping.adaptive_clip([grad], [weight], 0.1))
    np.testing.assert_allclose(clipped, [[0.3, 0.0], [0.4, 0.1]], rtol=1e-6)


def test_all_finite_spots_nan_and_inf(tensor):
    assert bool(clipping.all_finite([tensor([1.0, 2.0]), None]))
    assert not bool(clipping.all_finite([tensor([1.0, math.nan])]))
    assert not bool(clipping.all_finite([tensor([1.0]), tensor([-math.inf])]))


def test_unitwise_norm_runs_over_all_but_the_output_axis(tensor):
    # Dense kernel (in=2, out=2): column norms ||(3, 4)|| = 5 and ||(0, 1)|| = 1.
    np.testing.assert_allclose(
        numpy([clipping.unitwise_norm(tensor([[3.0, 0.0], [4.0, 1.0]]))])[0],
        [[5.0, 1.0]],
        rtol=1e-6,
    )
    # A bias vector is one unit: ||(3, 4)|| = 5.
    np.testing.assert_allclose(numpy([clipping.unitwise_norm(tensor([3.0, 4.0]))])[0], [5.0])


def test_agc_on_a_2x2_kernel_with_known_column_norms(tensor):
    weight = tensor([[3.0, 0.0], [4.0, 1.0]])  # unit norms 5 and 1
    grad = tensor([[0.3, 1.0], [0.4, 0.0]])  # unit norms 0.5 and 1
    # lambda = 0.1: bounds 0.5 and 0.1. Column 0 sits on its bound (kept);
    # column 1 is scaled by 0.1 / 1.
    (clipped,) = numpy(clipping.adaptive_clip([grad], [weight], 0.1))
    np.testing.assert_allclose(clipped, [[0.3, 0.1], [0.4, 0.0]], rtol=1e-6)


@pytest.mark.parametrize("shape", [(2, 2, 2), (2, 1, 2, 2)], ids=["conv1d", "conv2d"])
def test_agc_on_conv_kernels_takes_each_output_channel_as_a_unit(tensor, shape):
    # Kernels (k, in, out) and (h, w, in, out): unit j is kernel[..., j], 4 entries here.
    # Weight unit 0 (1, 2, 2, 4): norm 5; unit 1 (0, 0, 0, 1): norm 1.
    # Grad unit 0 (0.1, 0.2, 0.2, 0.4): norm 0.5; unit 1 (0, 0.6, 0, 0.8): norm 1.
    # lambda 0.1: bounds 0.5 and 0.1 -> unit 0 kept, unit 1 scaled by 0.1.
    # (Units over the first axis, PyTorch's layout, would give norms sqrt(5), sqrt(21).)
    def kernel(unit_0, unit_1):
        return np.stack([np.reshape(unit_0, (2, 2)), np.reshape(unit_1, (2, 2))], -1)

    weight = kernel([1.0, 2.0, 2.0, 4.0], [0.0, 0.0, 0.0, 1.0]).reshape(shape)
    grad = kernel([0.1, 0.2, 0.2, 0.4], [0.0, 0.6, 0.0, 0.8]).reshape(shape)
    (norms,) = numpy([clipping.unitwise_norm(tensor(weight))])
    assert norms.shape == (1,) * (len(shape) - 1) + (2,)
    np.testing.assert_allclose(norms.ravel(), [5.0, 1.0], rtol=1e-6)
    (clipped,) = numpy(clipping.adaptive_clip([tensor(grad)], [tensor(weight)], 0.1))
    expected = kernel([0.1, 0.2, 0.2, 0.4], [0.0, 0.06, 0.0, 0.08]).reshape(shape)
    np.testing.assert_allclose(clipped, expected, rtol=1e-6)


def test_agc_uses_eps_for_zero_weights_and_honours_exclusions(tensor):
    zeros = tensor([0.0, 0.0])
    grad = tensor([3.0, 4.0])  # norm 5; bound 0.5 * max(0, 1e-3) = 5e-4
    clipped, untouched = numpy(
        clipping.adaptive_clip([grad, grad], [zeros, zeros], 0.5, excluded=[False, True])
    )
    np.testing.assert_allclose(clipped, [3e-4, 4e-4], rtol=1e-5)
    np.testing.assert_allclose(untouched, [3.0, 4.0])


def test_scale_to_an_infinite_bound_is_the_identity(tensor):
    (out,) = numpy(
        clipping.scale_to_norm(
            [tensor([3.0, 4.0])], ops.convert_to_tensor(5.0), ops.convert_to_tensor(math.inf)
        )
    )
    np.testing.assert_array_equal(out, [3.0, 4.0])


@pytest.mark.parametrize(
    ("path", "rank", "axes"),
    [
        ("sequential/dense/kernel", 2, (0,)),  # (in, out)
        ("sequential/dense/bias", 1, None),  # a vector: one unit
        ("conv1d/kernel", 3, (0, 1)),  # (k, in, out): optax's rank-3 rule would take (0,)
        ("model/conv2d_3/kernel", 4, (0, 1, 2)),  # (h, w, in, out)
        ("lstm/lstm_cell/recurrent_kernel", 2, (0,)),
        ("model/multi_head_attention/query/kernel", 3, (0,)),  # (in, heads, dim)
        ("multi_head_attention/key/kernel", 3, (0,)),
        ("multi_head_attention/value/kernel", 3, (0,)),
        ("multi_head_attention/attention_output/kernel", 3, (0, 1)),  # (heads, dim, out)
        ("multi_head_attention/query/bias", 2, None),  # (heads, dim): one unit
        ("conv2d_transpose/kernel", 4, (0, 1, 3)),  # (h, w, out, in)
        ("depthwise_conv2d/kernel", 4, (0, 1)),  # (h, w, in, multiplier)
        ("separable_conv1d/depthwise_kernel", 3, (0,)),
        ("value/kernel", 2, (0,)),  # a top-level Dense named "value" is no projection
    ],
)
def test_unit_axes_by_the_layer_that_owns_the_variable(path, rank, axes):
    assert clipping.unit_axes(path, rank) == axes


def test_agc_on_attention_kernels_takes_heads_and_dims_apart(tensor):
    # A query kernel (in=2, heads=2, dim=1): units are the (head, dim) pairs, fan-in `in`.
    # Weight units: head 0 (3, 4) -> 5, head 1 (0, 1) -> 1. Grad units: head 0 (0.3, 0.4)
    # -> 0.5, head 1 (0.6, 0.8) -> 1. lambda 0.1: bounds 0.5, 0.1 -> head 0 kept, head 1
    # scaled by 0.1. The rank rule would pool both heads into one unit of dim 0:
    # weight norm sqrt(26), grad norm sqrt(1.25) -> both heads scaled by 0.1 * sqrt(20.8).
    weight = tensor(np.array([[3.0, 0.0], [4.0, 1.0]]).reshape(2, 2, 1))
    grad = tensor(np.array([[0.3, 0.6], [0.4, 0.8]]).reshape(2, 2, 1))
    axes = [clipping.unit_axes("mha/query/kernel", 3)]
    (clipped,) = numpy(clipping.adaptive_clip([grad], [weight], 0.1, axes=axes))
    np.testing.assert_allclose(clipped[..., 0], [[0.3, 0.06], [0.4, 0.08]], rtol=1e-6)
    (pooled,) = numpy(clipping.adaptive_clip([grad], [weight], 0.1))
    np.testing.assert_allclose(pooled, numpy([grad])[0] * 0.1 * math.sqrt(20.8), rtol=1e-6)
    # The output kernel (heads=2, dim=1, out=2): unit j is kernel[:, :, j] over both heads.
    # Weight: out 0 (3, 4) -> 5, out 1 (0, 1) -> 1; grad: out 0 (0.3, 0.4), out 1 (0.6, 0.8).
    weight = tensor(np.array([[3.0, 0.0], [4.0, 1.0]]).reshape(2, 1, 2))
    grad = tensor(np.array([[0.3, 0.6], [0.4, 0.8]]).reshape(2, 1, 2))
    axes = [clipping.unit_axes("mha/attention_output/kernel", 3)]
    (clipped,) = numpy(clipping.adaptive_clip([grad], [weight], 0.1, axes=axes))
    np.testing.assert_allclose(clipped[:, 0, :], [[0.3, 0.06], [0.4, 0.08]], rtol=1e-6)
