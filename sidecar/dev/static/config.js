/*
 * Where the demo finds the sidecar. Empty: this page's own origin (the sidecar serves the demo, as in
 * `authsidecar dev`). When the SPA lives on another origin, its server rewrites this file (see
 * sidecar/dev/spa.py) or you edit it: window.AUTHSIDECAR_BASE = "https://api.example.com";
 */
window.AUTHSIDECAR_BASE = window.AUTHSIDECAR_BASE || "";
