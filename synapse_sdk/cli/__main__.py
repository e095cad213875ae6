"""``python -m synapse_sdk.cli``: the same as the ``synapse-upload`` command."""

import sys

from synapse_sdk.cli import main

sys.exit(main())
