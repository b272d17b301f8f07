"""Experiments: the demo, the performance benchmark, shared experiment pieces."""
