// Starts Swagger UI on /docs from the server's own copy of its bundle (no inline script, no CDN).
const box = document.getElementById("swagger-ui");
window.ui = window.SwaggerUIBundle({
  url: box.dataset.openapi,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIBundle.SwaggerUIStandalonePreset],
});
