"""URL layout of the test server, as our chunked-upload protocol expects.

``chunked_upload/``: PUT the first chunk (creates the upload), POST a whole
small file, GET the caller's uploads.
``chunked_upload/<uuid:pk>/``: PUT further chunks, GET the state, POST to
finalize with the ``md5`` form field.
"""

from __future__ import annotations

from django.urls import path

from tests.drf_server.views import chunked_upload_view

urlpatterns = [
    path("chunked_upload/", chunked_upload_view, name="chunkedupload-list"),
    # The name is fixed: ChunkedUploadSerializer reverses "chunkedupload-detail"
    # to build the absolute ``url`` of each upload.
    path("chunked_upload/<uuid:pk>/", chunked_upload_view, name="chunkedupload-detail"),
]
