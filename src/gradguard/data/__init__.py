"""Data: sources and their validation, the split, uint8 shard sets, streaming, augmentation.

Imports nothing by itself: `prepare` loads no framework. Only `stream` and the
augmentation layers need Keras.
"""
