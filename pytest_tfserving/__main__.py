"""``python -m pytest_tfserving``: see :mod:`pytest_tfserving.cli`."""

import sys

from pytest_tfserving.cli import main

sys.exit(main())
