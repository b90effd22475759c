"""DVC stage entry points: `python -m stages.<name>`, each a short `main()`."""

import os

# Quiet TensorFlow's C++ start-up banner; set here, before any stage imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
