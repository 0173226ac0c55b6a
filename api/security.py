"""Response headers that keep stored content from running as code in a browser.

* ``/file`` serves a record's original with the media type of its stored, decoded ``format``
  (never guessed from the file name), so a GIF/HTML polyglot named ``poly.html`` stays an
  image; formats browsers do not render as images are downloads (``Content-Disposition:
  attachment``).
* Every response gets ``X-Content-Type-Options: nosniff`` and a restrictive
  ``Content-Security-Policy``: the page loads only its own script, style and images (no inline
  code, no frames, no plugins); API responses may not load anything at all; ``/docs`` and
  ``/redoc`` load only the server's own copies of Swagger UI and ReDoc.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from media.formats import EXTENSIONS, ORIGINAL_TYPES

# Pillow's decoded format -> the image type browsers render inline.
RASTER_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "ICO": "image/x-icon",
    "AVIF": "image/avif",
}
# Stored formats that are images but that browsers do not display: served as downloads.
DOWNLOAD_TYPES = {"TIFF": "image/tiff", **ORIGINAL_TYPES}  # + HEIC and camera RAW (media/formats/)

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
# /docs and /redoc (api/docs_pages.py): the server's own Swagger UI and ReDoc bundles and nothing from
# elsewhere. Their scripts are files too; ReDoc's styled components inject <style> elements and
# its search runs in a blob: worker, hence the style and worker sources.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'; object-src 'none'"
)
DOCS_PAGES = ("/docs", "/redoc")
# An original opened on its own: the browser's image viewer may show it, nothing may run.
FILE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'self'; sandbox"


def file_headers(fmt: str | None, rid: int) -> tuple[str, dict[str, str]]:
    """(media type, extra headers) for serving an original whose decoded format is ``fmt``."""
    fmt = (fmt or "").upper()
    if fmt in RASTER_TYPES:
        disposition = f'inline; filename="{rid}.{fmt.lower()}"'
        return RASTER_TYPES[fmt], {"Content-Disposition": disposition, "Content-Security-Policy": FILE_CSP}
    media = DOWNLOAD_TYPES.get(fmt, "application/octet-stream")
    ext = EXTENSIONS.get(fmt, fmt.lower()) if fmt in DOWNLOAD_TYPES else "bin"
    return media, {"Content-Disposition": f'attachment; filename="{rid}.{ext}"', "Content-Security-Policy": FILE_CSP}


def _is_page(path: str) -> bool:
    return path == "/" or path.startswith(("/static/", "/static-docs/"))


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        path = request.url.path
        if path in DOCS_PAGES:
            response.headers.setdefault("Content-Security-Policy", DOCS_CSP)
            return response
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP if _is_page(path) else API_CSP)
        if not _is_page(path):
            response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response
