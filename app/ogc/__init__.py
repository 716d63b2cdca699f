"""The OGC face of the service: the layer declarations, the filters (query parameters and
CQL2), coordinate reference systems, links, the OpenAPI 3.0 document and the cached-tile
fast path. The routes themselves live in ``app.routers.features`` and ``app.routers.tiles``."""
