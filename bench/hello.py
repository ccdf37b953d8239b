"""The hello-world ceiling: the smallest Starlette app, served with the same uvicorn settings as scimjit.

Whatever scimjit reaches is measured against this: it is what the framework, the server and the machine
allow before any of scimjit's own work.
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def hello(request: Request) -> Response:
    return JSONResponse({"hello": "world"})


app = Starlette(routes=[Route("/", hello), Route("/healthz", hello)])
