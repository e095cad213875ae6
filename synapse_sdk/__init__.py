"""Drop-in client surface of synapse-sdk around uploads, on the ``engine`` core."""
