"""Experiments: many runs of a DVC project, driven through DVC's own queue.

`queue` finds, queues, starts and reads DVC experiments; `runner` keeps a grid of them
going to the end; `plan` is a compare's grid (compare.yaml); `compare` and `gate` are the
two flows, config -> plan -> queue -> results -> `summary` (statistics) -> `report`;
`cli` is the `gradguard` command. DVC is imported only inside the functions that call
it, so importing this package needs neither DVC nor Keras.

Imports nothing by itself.
"""
