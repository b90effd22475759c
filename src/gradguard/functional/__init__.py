"""The guard's math as pure functions over `keras.ops`: clipping, spike detection, the step.

Each takes and returns plain tensors (state included), so the same code runs
eagerly, inside `tf.function` and under `jax.jit`; `gradguard.guard` keeps the
state in optimizer variables. Imports nothing by itself.
"""
