"""Synthetic training data: generators, sampling a model, ranking with verifiers, provenance."""
