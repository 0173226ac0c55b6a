"""Layer 6 (edge). The HTTP API (FastAPI) and the web page. Handlers are thin: they call the packages."""
