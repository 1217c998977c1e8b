"""pytest-tfserving: a release gate for TensorFlow SavedModels headed to TF Serving.

Importing this package is cheap: TensorFlow is imported only by the modules that need it,
and only when a ``--tfs-*`` feature is used.
"""

__version__ = "0.1.0"
