"""Starlette wiring: routes, authentication, limits, error rendering, lifespan."""
