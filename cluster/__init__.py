"""Cluster layer: config, the local Ray head, Serve application assembly, job submission and the CLI."""
