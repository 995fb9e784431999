// Starts Swagger UI on the service's own OpenAPI document. It is a file rather than an
// inline script so that the page's Content-Security-Policy can refuse inline scripts.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis],
  // Swagger UI would otherwise ask an outside validator for a badge.
  validatorUrl: null,
});
