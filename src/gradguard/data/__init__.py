"""Data: sources, the split and its checks, shard sets, streaming, augmentation, tasks.

Imports no framework by itself (`prepare` loads none): only `stream` and the
augmentation layers need Keras. `temporal_order` generates Pascanu et al. 2013's task.
"""

from gradguard.data.tasks import temporal_order

__all__ = ["temporal_order"]
