"""Measurement (not `measure`: that name is the public `edgeprune.measure` verb): timing on real runtimes, sessions, statistics, MAC counting and the latency model.

May import: edgeprune core modules, edgeprune.backends, edgeprune.targets, edgeprune.models and
edgeprune.exporter (a session exports a PyTorch model to time it). Never imports transforms
(pruning, sparsity, attention, quantize, recover), optimizer, report, deploy or cli.
"""
