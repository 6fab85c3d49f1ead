"""copytrace.pipelines: the jobs users run, with the same names and arguments as the CLI.

    from copytrace.pipelines import build_index, query
"""

from copytrace.pipelines.build import build_index
from copytrace.pipelines.query import query

__all__ = ["build_index", "query"]
