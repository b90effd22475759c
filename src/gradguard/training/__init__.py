"""Training: models and the guarded optimizer, callbacks, recovery, resume, fit, the run
sequence of the train stage, its DVCLive files, and multi-process training on JAX.

Imports nothing by itself.
"""
