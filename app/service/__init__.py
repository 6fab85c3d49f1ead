"""copytrace.app.service: the HTTP service (`copytrace serve`): FastAPI app over `QueryEngine`,
micro-batching of concurrent requests.

Modules:
    app.py           `copytrace serve` [tests: test_dedup_service.py, test_query_engine.py,
                     test_service.py]
    auth.py          Bearer-token authentication
    batcher.py       Micro-batching of concurrent query requests into one engine call, on one worker
                     thread
    config.py        The HTTP service's limits, and where its bearer token comes from
    metrics.py       Prometheus metrics of the service
    uploads.py       Reading an uploaded image

The names below are the public API; each is imported on first use (nothing heavy at
import time). Modules and names starting with `_` are private to this package.
"""

from copytrace.util import lazy_api

_EXPORTS = {
    "ServiceConfig": "config",
    "create_app": "app",
    "serve": "app",
}

__all__, __getattr__, __dir__ = lazy_api(__name__, _EXPORTS)
