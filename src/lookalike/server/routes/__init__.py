"""The API's routers, one module per resource; `app.py` includes them all."""

from lookalike.server.routes import archive, catalog, health, page, queries, search, system

ROUTERS = [system.router, search.router, catalog.router, archive.router, health.router, queries.router, page.router]

__all__ = ["ROUTERS"]
