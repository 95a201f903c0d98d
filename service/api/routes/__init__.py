"""The HTTP endpoints, one module per resource."""

from fastapi import APIRouter

from service.api.routes import colorize, health, jobs, models

router = APIRouter()
for part in (colorize, jobs, models, health):
    router.include_router(part.router)
