"""Data: sources, the split and its checks, uint8 shard sets, streaming, augmentation.

Imports nothing by itself: `prepare` loads no framework. Only `stream` and the
augmentation layers need Keras.
"""
