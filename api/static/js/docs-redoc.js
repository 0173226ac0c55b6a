// Starts ReDoc on /redoc from the server's own copy of its bundle (no inline script, no CDN fonts).
const box = document.getElementById("redoc");
window.Redoc.init(box.dataset.openapi, { hideDownloadButton: false }, box);
