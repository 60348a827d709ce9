"""TFRS two-tower retrieval: feature preparation, towers, fit loop and export.

Import ``training`` (not TensorFlow) first: ``training/__init__.py`` selects the legacy Keras TFRS needs.
"""
