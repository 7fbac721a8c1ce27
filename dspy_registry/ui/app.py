"""`dspyreg ui`: the pages of pages.py served live over one registry, read-only, on loopback by default.

Imported only by `dspyreg ui` (it imports FastAPI). Every request reads the registry afresh through the facade, so a
promote in another terminal shows on the next reload; a remote registry is fetched once, when the view starts.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..errors import RegistryError, UnknownRef
from .pages import STATIC, Pages

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..registry import Registry


def create_app(registry: Registry) -> FastAPI:
    from fastapi import FastAPI
    from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, Response

    pages = Pages(registry, live=True)
    lock = threading.Lock()  # one GitStore (its cat-file process) serves one request at a time
    app = FastAPI(title="dspyreg ui", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/static/style.css")
    def style() -> Response:
        return FileResponse(STATIC / "style.css", media_type="text/css")

    @app.get("/{path:path}")
    def page(path: str) -> Response:
        try:
            with lock:
                return HTMLResponse(pages.render(path or "index.html"))
        except UnknownRef as err:
            return PlainTextResponse(f"not found: {err}", status_code=404)
        except RegistryError as err:
            return PlainTextResponse(f"error: {err}", status_code=500)

    return app
