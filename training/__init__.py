"""Two-tower retrieval trained from a replay of the log, baselines, evaluation and the promotion gate."""

# Before any module of this package imports TensorFlow: ``modelfiles`` selects the legacy Keras TFRS needs.
import modelfiles  # noqa: F401
