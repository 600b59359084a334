"""Reports: terminal/markdown/json tables, the HTML report, the sparsity report and optimize's OUTDIR.

May import: core modules, measurement (result types), targets. Never imports optimizer or cli: the
optimizer hands its result in (type names appear only under TYPE_CHECKING).
"""
