"""copytrace.app: the interfaces: the `copytrace` CLI (`cli/`) and the HTTP service (`service/`),
thin layers over the jobs in copytrace.pipelines.

Modules:
    cli/             sub-package, see its docstring
    service/         sub-package, see its docstring
    threatexchange/  sub-package, see its docstring (the python-threatexchange extension)

Nothing below imports this floor; benchmarks may (the `eval` and `bench` commands).
"""
