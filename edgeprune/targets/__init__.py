"""Targets: what the model will run on.

Device profiles (YAML schema, loader, host probe) and `Target` = profile + runtime + that runtime's
capabilities on that device. May import: edgeprune core modules (errors, _io, env) and
edgeprune.backends (the capability registry). Never imports measurement, transforms, optimizer, report,
deploy or cli.
"""
