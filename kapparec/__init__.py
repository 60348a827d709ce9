"""kapparec: a streaming-first (Kappa) recommender. The CLI lives in ``kapparec.cli``."""

__version__ = "0.1.0"
