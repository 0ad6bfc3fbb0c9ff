"""The operators' web dashboard: static HTML, JavaScript and CSS served by the management
listener (``/`` and ``/static/...``), calling the JSON API with the logged-in user's
credentials.

The assets are read once, when the management server starts (:func:`load_assets`), from the
``static`` folder beside this module (installed as package data, so a non-editable install
serves them too). Nothing is fetched from elsewhere: the dashboard works without internet
access. No build step: the files are hand-written and served as they are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}

# Served with every dashboard page: scripts and styles only from syncmq itself, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; object-src 'none'; "
                                "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    """One static file: its bytes, content type and an ETag (a hash of the bytes)."""

    data: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of ``static/`` by URL path (``/static/app.js``), plus ``/`` (the page).

    Read once at start-up; the dict is never changed afterwards, so request threads share
    it without a lock.
    """
    out: dict[str, Asset] = {}
    root = resources.files(__package__).joinpath("static")
    for entry in root.iterdir():
        name = entry.name
        ext = name[name.rfind("."):] if "." in name else ""
        if not entry.is_file() or ext not in CONTENT_TYPES:
            continue
        data = entry.read_bytes()
        etag = '"' + hashlib.sha1(data).hexdigest()[:16] + '"'
        out["/static/" + name] = Asset(data, CONTENT_TYPES[ext], etag)
    if "/static/index.html" in out:
        out["/"] = out["/index.html"] = out["/static/index.html"]
    return out
