"""The API's routers, one module per resource; `app.py` includes them all."""

from lookalike.server.routes import archive, catalog, health, page, queries, search, system, views

ROUTERS = [
    system.router,
    search.router,
    catalog.router,
    archive.router,
    views.router,
    health.router,
    queries.router,
    page.router,
]

__all__ = ["ROUTERS"]
