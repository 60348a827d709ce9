"""Two-tower retrieval trained from a replay of the log, baselines, evaluation, index and registry."""

import os

# TFRS needs the legacy Keras; TF reads this when it is first imported, so set it here,
# before any module of this package imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
