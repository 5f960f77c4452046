"""The FastAPI service: app factory, routes, pages, auth."""
