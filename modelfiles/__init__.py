"""What a model version is on disk: training writes it through this package, serving reads it.

- ``registry``: the versions, the production pointer and each artifact's recorded hash;
- ``two_tower``: the exported two-tower's files (the user tower, the item embeddings) and their loader;
- ``numpy_tower``: the user tower's weights evaluated without TensorFlow;
- ``query``: the user tower's inputs, built the same way when training and when serving;
- ``index``: the retrieval index (ScaNN or exact) behind one interface;
- ``ranker``: the learned ranker's file.

It imports neither ``training`` nor ``serving``, so both depend on it and not on each other.
"""

import os

# TFRS needs the legacy Keras, and TensorFlow reads this when it is first imported: whichever of
# training or serving loads TensorFlow first (through this package), it is set before.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
