/*
 * authsidecar-fetch.js: fetch() for a single-page app behind authsidecar. One file, no
 * dependencies, no build step: copy it into your app.
 *
 * The sidecar keeps the access, ID and refresh tokens in HttpOnly cookies, so this page's
 * JavaScript never sees them. What the page still has to do, and what this file does for it:
 *
 *   - send the cookies with every call to the sidecar: credentials: 'include' (the sidecar may be
 *     another origin, e.g. the SPA on https://app.example.com and the sidecar on
 *     https://api.example.com);
 *   - on POST, PUT, PATCH and DELETE, copy the XSRF-TOKEN cookie into an X-XSRF-TOKEN header
 *     (double-submit CSRF token): the sidecar refuses such requests without it (403);
 *   - on a 401, ask the sidecar once to refresh the session (POST /auth/refresh, with the CSRF
 *     header) and retry the request; if the refresh fails too, send the browser to sign in
 *     ({base}/auth/login?return_to=<this page>), which brings it back here afterwards.
 *
 * Where the sidecar is (default: this page's own origin), either of:
 *
 *   <script src="authsidecar-fetch.js" data-sidecar-base="https://api.example.com"></script>
 *   <script>window.AUTHSIDECAR_BASE = "https://api.example.com";</script>   (before this file)
 *
 * With the sidecar on another origin, its configuration must list this page's origin in
 * cors.allowed_origins and allowed_return_origins, and set cookies.domain to the common parent
 * domain (example.com) so that this page can read the XSRF-TOKEN cookie. Renamed cookie or header
 * (csrf.cookie, csrf.header): data-csrf-cookie / data-csrf-header, or window.AUTHSIDECAR_CSRF_COOKIE
 * / window.AUTHSIDECAR_CSRF_HEADER.
 *
 * API (globals):
 *
 *   authFetch(url, options) -> Promise<Response>
 *       fetch() with the above. A url starting with "/" is a path on the sidecar; an absolute URL on
 *       another origin is passed to fetch() untouched (no cookies, no CSRF token, no refresh).
 *       `url` is a string or URL (not a Request); a body is sent twice when the request is retried,
 *       so use a string, FormData, Blob or URLSearchParams, not a stream.
 *       When the session cannot be renewed the promise rejects with an error named
 *       "AuthRedirectError" while the browser navigates to the sign-in page.
 *   AuthSidecar.me() -> Promise<object | null>
 *       The identity from /auth/me ({sub, username, email, groups, scopes, expires_at}), or null
 *       when nobody is signed in. Never navigates.
 *   AuthSidecar.login([returnTo])   navigate to sign in, then back to returnTo (default: this page)
 *   AuthSidecar.logout()            navigate to {base}/auth/logout (the sidecar returns to the app)
 *   AuthSidecar.refresh() -> Promise<boolean>   renew the session now (shared by concurrent callers)
 *   AuthSidecar.url(path)           the absolute URL of a path on the sidecar
 *   AuthSidecar.base                the configured base ("" for this page's origin)
 */
(function (global) {
  'use strict';

  var UNSAFE_METHODS = ['POST', 'PUT', 'PATCH', 'DELETE'];
  var script = global.document && global.document.currentScript;

  function setting(attribute, variable, fallback) {
    var fromTag = script && script.getAttribute(attribute);
    if (fromTag !== null && fromTag !== undefined && fromTag !== '') return fromTag;
    var fromWindow = global[variable];
    return typeof fromWindow === 'string' ? fromWindow : fallback;
  }

  var base = setting('data-sidecar-base', 'AUTHSIDECAR_BASE', '').replace(/\/+$/, '');
  var csrfCookie = setting('data-csrf-cookie', 'AUTHSIDECAR_CSRF_COOKIE', 'XSRF-TOKEN');
  var csrfHeader = setting('data-csrf-header', 'AUTHSIDECAR_CSRF_HEADER', 'X-XSRF-TOKEN');
  var sidecarOrigin = new URL(base || global.location.origin, global.location.href).origin;
  var refreshing = null;

  function url(path) {
    var text = String(path);
    // "/path" (not the protocol-relative "//host") is a path on the sidecar.
    if (text.charAt(0) === '/' && text.charAt(1) !== '/') return (base || global.location.origin) + text;
    return new URL(text, global.location.href).href;
  }

  function readCookie(name) {
    var pairs = global.document.cookie ? global.document.cookie.split('; ') : [];
    for (var i = 0; i < pairs.length; i++) {
      var eq = pairs[i].indexOf('=');
      if (pairs[i].slice(0, eq) === name) return pairs[i].slice(eq + 1);
    }
    return null;
  }

  // One request to the sidecar: cookies included, the CSRF token on unsafe methods. The token is
  // read at send time: a refresh may have issued a new one.
  function send(target, options) {
    var init = Object.assign({}, options, { credentials: 'include' });
    var method = String(init.method || 'GET').toUpperCase();
    if (UNSAFE_METHODS.indexOf(method) >= 0) {
      var headers = new Headers(init.headers || {});
      var token = readCookie(csrfCookie);
      if (token && !headers.has(csrfHeader)) headers.set(csrfHeader, token);
      init.headers = headers;
    }
    return global.fetch(target, init);
  }

  function refresh() {
    if (refreshing === null) {
      refreshing = send(url('/auth/refresh'), { method: 'POST', headers: { Accept: 'application/json' } })
        .then(function (response) { return response.ok; }, function () { return false; })
        .then(function (ok) { refreshing = null; return ok; });
    }
    return refreshing;
  }

  function login(returnTo) {
    var back = returnTo === undefined ? global.location.href : url(returnTo);
    global.location.assign(url('/auth/login') + '?return_to=' + encodeURIComponent(back));
  }

  function logout() {
    global.location.assign(url('/auth/logout'));
  }

  function redirecting() {
    var error = new Error('authsidecar: the session has ended; the browser is going to the sign-in page');
    error.name = 'AuthRedirectError';
    return error;
  }

  async function authFetch(input, options) {
    var target = url(input);
    if (new URL(target).origin !== sidecarOrigin) return global.fetch(target, options);
    var response = await send(target, options);
    if (response.status !== 401) return response;
    if (!(await refresh())) {
      login();
      throw redirecting();
    }
    return send(target, options);
  }

  async function me() {
    var response = await send(url('/auth/me'), { headers: { Accept: 'application/json' } });
    if (response.status === 401) return null;
    if (!response.ok) throw new Error('authsidecar: /auth/me answered ' + response.status);
    return response.json();
  }

  global.authFetch = authFetch;
  global.AuthSidecar = Object.freeze({
    base: base,
    fetch: authFetch,
    me: me,
    login: login,
    logout: logout,
    refresh: refresh,
    url: url,
  });
})(window);
