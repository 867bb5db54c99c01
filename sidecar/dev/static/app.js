/*
 * The demo page: who am I (/auth/me), call the API through the sidecar, log in and out.
 * Everything goes through authsidecar-fetch.js; every value is written with textContent.
 */
(function () {
  'use strict';

  var $ = function (id) { return document.getElementById(id); };

  function setState(element, state, text) {
    element.dataset.state = state;
    element.textContent = text;
  }

  function showCookies() {
    var names = document.cookie ? document.cookie.split('; ').map(function (pair) {
      var eq = pair.indexOf('=');
      var value = pair.slice(eq + 1);
      return pair.slice(0, eq) + '=' + (value.length > 16 ? value.slice(0, 16) + '\u2026' : value);
    }) : [];
    $('visible-cookies').textContent = names.length ? names.join('\n') : '(none)';
  }

  function showIdentity(identity) {
    var signedIn = identity !== null;
    $('login').hidden = signedIn;
    $('logout').hidden = !signedIn;
    $('identity').hidden = !signedIn;
    if (!signedIn) {
      setState($('status'), 'signed-out', 'Not signed in.');
      return;
    }
    setState($('status'), 'signed-in', 'Signed in as ' + (identity.username || identity.sub) + '.');
    $('who-username').textContent = identity.username || '';
    $('who-email').textContent = identity.email || '';
    $('who-sub').textContent = identity.sub;
    $('who-expires').textContent = new Date(identity.expires_at * 1000).toLocaleString();
    $('groups-count').textContent = String(identity.groups.length);
    var list = $('who-groups');
    list.replaceChildren();
    identity.groups.forEach(function (group) {
      var item = document.createElement('li');
      item.textContent = group;
      list.appendChild(item);
    });
  }

  async function refreshSession() {
    try {
      showIdentity(await AuthSidecar.me());
    } catch (error) {
      setState($('status'), 'error', 'Could not ask the sidecar: ' + error.message);
    }
    showCookies();
  }

  function showEcho(echo) {
    var body = $('api-identity').tBodies[0];
    body.replaceChildren();
    var identity = (echo && echo.identity) || {};
    Object.keys(identity).sort().forEach(function (name) {
      var row = body.insertRow();
      row.insertCell().textContent = name;
      row.insertCell().textContent = identity[name];
    });
    $('api-identity').hidden = Object.keys(identity).length === 0;
    $('api-json').textContent = JSON.stringify(echo, null, 2);
    $('api-details').hidden = false;
  }

  async function callApi(method) {
    var path = method === 'GET' ? '/api/hello' : '/api/items';
    var options = { method: method, headers: { Accept: 'application/json' } };
    if (method !== 'GET') {
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify({ note: 'sent by the demo SPA', at: new Date().toISOString() });
    }
    setState($('api-status'), 'calling', method + ' ' + path + ' \u2026');
    try {
      var response = await authFetch(path, options);
      var text = await response.text();
      var echo;
      try { echo = JSON.parse(text); } catch (_) { echo = { body: text }; }
      setState($('api-status'), response.ok ? 'done' : 'error',
        method + ' ' + path + ' \u2192 ' + response.status + (response.ok ? ' (the app received the request)' : ''));
      showEcho(echo);
    } catch (error) {
      if (error.name === 'AuthRedirectError') {
        setState($('api-status'), 'redirecting', 'Session ended: going to the sign-in page\u2026');
        return;
      }
      setState($('api-status'), 'error', method + ' ' + path + ' failed: ' + error.message);
    }
    showCookies();
  }

  $('sidecar-base').textContent = AuthSidecar.base || location.origin + ' (this origin)';
  $('login').addEventListener('click', function () { AuthSidecar.login(); });
  $('logout').addEventListener('click', function () { AuthSidecar.logout(); });
  $('call-get').addEventListener('click', function () { callApi('GET'); });
  $('call-post').addEventListener('click', function () { callApi('POST'); });
  refreshSession();
})();
