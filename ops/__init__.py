"""Operator tooling: the `relkd` command line, the embedded stack, demo, training Jobs and rollouts.

Nothing here is deployed as a service; it starts, submits or promotes what is.
"""
