"""The responder console: one static page under /admin/ui that drives the admin API.

The page and its assets hold no data, so they are served without a key; the page
asks for the admin key and sends it on every call to /admin/*, exactly as the CLI
does. A strict Content-Security-Policy keeps scripts and styles to these files.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


def routes() -> list[Route]:
    # Read once at start-up: the files ship inside the package and never change while it runs.
    folder = resources.files("gateway").joinpath("ui")
    files = {name: (folder.joinpath(name).read_bytes(), media) for name, media in ASSETS.items()}

    def serve(name: str) -> Response:
        body, media = files[name]
        return Response(body, media_type=media, headers=HEADERS)

    async def page(request: Request) -> Response:
        return serve("index.html")

    async def script(request: Request) -> Response:
        return serve("console.js")

    async def style(request: Request) -> Response:
        return serve("console.css")

    return [
        Route("/admin/ui", page, methods=["GET"]),
        Route("/admin/ui/console.js", script, methods=["GET"]),
        Route("/admin/ui/console.css", style, methods=["GET"]),
    ]
