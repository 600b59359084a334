"""The top-level verbs stay verbs: no public name of `edgeprune` is also the name of one of its submodules.

Importing a submodule binds it on the package under its own name, so with a module `edgeprune/export.py`
`import edgeprune.export` (anything that imports from it) silently replaced the function `ep.export` with the
module, and `ep.export(model, ...)` raised "'module' object is not callable" in benchmarks/recover.py.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect

import edgeprune as ep


def test_no_public_name_is_a_submodule_name():
    clashes = [n for n in ep.__all__ if importlib.util.find_spec(f"edgeprune.{n}") is not None]
    assert clashes == []


def test_verbs_are_callable_after_every_defining_module_was_imported():
    from edgeprune import _LAZY  # noqa: PLC2701 (the package's own table, read by its own test)

    for module in set(_LAZY.values()):
        importlib.import_module(module)
    for name in ("export", "optimize", "prune", "sparsify", "benchmark", "load_model", "load_profile", "count"):
        assert inspect.isfunction(getattr(ep, name)), name
