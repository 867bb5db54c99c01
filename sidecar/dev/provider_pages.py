"""The dev provider's HTML: a Hosted-UI-like sign-in form and an error page. Every value is escaped."""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import escape

from aiohttp import web

_LANG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")

# Inline CSS only, nothing else may load; no framing (clickjacking on a password form).
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem}"
    "label,input,button{display:block;width:100%;margin:.4rem 0;box-sizing:border-box}"
    "input,button{padding:.5rem}.error{color:#a00}.dev{color:#666;font-size:.85rem}"
)


def _page(title: str, body: str, *, lang: str = "en", status: int = 200) -> web.Response:
    html_lang = lang if _LANG.fullmatch(lang) else "en"
    text = (
        f'<!doctype html><html lang="{escape(html_lang)}"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )
    return web.Response(status=status, text=text, content_type="text/html", headers=_HEADERS)


def login_page(
    params: Mapping[str, str],
    *,
    action: str,
    username: str = "",
    error: str | None = None,
    lang: str = "en",
) -> web.Response:
    """The sign-in form; `params` (the authorization request) ride along in hidden fields."""
    hidden = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in params.items()
    )
    error_html = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = (
        "<h1>Sign in</h1>"
        f"{error_html}"
        f'<form method="post" action="{escape(action)}">{hidden}'
        '<label for="username">Username</label>'
        f'<input id="username" name="username" autocomplete="username" value="{escape(username)}" required>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" autocomplete="current-password">'
        '<button type="submit" name="action" value="signin">Sign in</button>'
        '<button type="submit" name="action" value="cancel" formnovalidate>Cancel</button>'
        "</form>"
        '<p class="dev">authsidecar development provider &mdash; not for production use.</p>'
    )
    return _page("Sign in", body, lang=lang)


def error_page(message: str, *, status: int = 400) -> web.Response:
    """Shown instead of redirecting when the redirect target itself cannot be trusted."""
    body = f'<h1>An error was encountered</h1><p class="error">{escape(message)}</p>'
    return _page("Error", body, status=status)


def signed_out_page() -> web.Response:
    return _page("Signed out", "<h1>Signed out</h1><p>You have been signed out of the dev provider.</p>")
