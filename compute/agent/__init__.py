"""The node agent: runs on every pool host, pulls its desired state, runs replicas."""
