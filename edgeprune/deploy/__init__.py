"""Deployment: bundles (one .tar.gz with the artifact, inputs and the runner), the standalone runner
and remote (ssh) timing.

May import: core modules, backends, measurement, targets. Never imports optimizer, report or cli.
The runner (deploy/runner/edgeprune_run.py) imports nothing from edgeprune: it runs on a device
that has only the runtime.
"""
