"""Views of the test server: drf-chunked-upload's own, uncustomized.

The point of the server is to test against the package's real behaviour, so
``ChunkedUploadView`` is used as shipped; authentication and permissions come
from the ``REST_FRAMEWORK`` defaults in settings.
"""

from __future__ import annotations

from drf_chunked_upload.views import ChunkedUploadView

chunked_upload_view = ChunkedUploadView.as_view()
