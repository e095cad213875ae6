"""Drop-in client surface of synapse-sdk around uploads, on the ``engine`` core.

This package is synapse-upload's ``synapse_sdk``: it provides the import
paths of the published synapse-sdk for everything a user uploads with, and
cannot share an environment with synapse-sdk itself (see
``synapse_sdk.installation``); importing it warns when it does.
"""

from __future__ import annotations

import importlib.metadata
import warnings

from synapse_sdk.installation import conflict

__all__ = ["InstallationConflictWarning", "__version__"]

#: Read by ``synapse_sdk.installation``: this file is synapse-upload's.
_provided_by = "synapse-upload"

try:
    __version__: str = importlib.metadata.version("synapse-upload")
except importlib.metadata.PackageNotFoundError:  # run from a source tree
    __version__ = "0+unknown"


class InstallationConflictWarning(RuntimeWarning):
    """synapse-sdk is installed in the same environment (see ``synapse_sdk.installation``)."""


_problem = conflict()
if _problem is not None:
    warnings.warn(_problem, InstallationConflictWarning, stacklevel=2)
