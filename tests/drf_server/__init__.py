"""A minimal Django project serving the public drf-chunked-upload views.

Integration tests start it on loopback (see ``tests.drf_fixture``) so the
upload client can be exercised against a chunked-upload implementation that
was not written by us.
"""
