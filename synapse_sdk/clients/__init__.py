"""HTTP clients for the Synapse backend."""
