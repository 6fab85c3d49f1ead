"""copytrace.app.service: the HTTP service (`copytrace serve`): FastAPI app over `QueryEngine`,
micro-batching of concurrent requests, and the analyst's web page (assets in static/).

Modules:
    app.py           `copytrace serve` [tests: test_dedup_service.py, test_query_engine.py,
                     test_service.py]
    auth.py          Token authentication: the bearer header or the login form's cookie
                     [tests: test_web_page.py]
    batcher.py       Micro-batching of concurrent query requests into one engine call, on one worker
                     thread
    config.py        The HTTP service's limits, and where its bearer token comes from
    metrics.py       Prometheus metrics of the service
    schemas.py       The JSON API's response shapes, for the OpenAPI document [tests: test_web_page.py]
    thumbs.py        Catalog thumbnails by image id, resized and cached [tests: test_web_page.py]
    uploads.py       Reading an uploaded image
    web.py           The web page (static/), login, thumbnails, localization [tests: test_web_page.py]

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
