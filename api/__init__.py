"""The HTTP API (FastAPI) and the web page. Handlers are thin: they call the packages."""
