"""The dashboard's one page, filled from the package's ``page.html`` and ``tile.html``."""

from __future__ import annotations

import html
import math
import secrets
from functools import cache
from importlib import resources
from urllib.parse import quote

MJPEG_TILES = 4


@cache
def _template(name: str) -> str:
    """A template shipped as package data (read once; the files never change at run time)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def render_page(cameras: list[str]) -> tuple[bytes, str]:
    """The page for ``cameras`` and the CSP nonce its script and style carry.

    Names go into markup only through ``html.escape`` and into URLs only percent-encoded;
    the script reads them back from ``data-camera`` attributes, never from generated code.
    Browsers hold at most six connections per host and an MJPEG stream keeps one for good,
    so only the first :data:`MJPEG_TILES` cameras stream; the others refresh snapshots.
    """
    nonce = secrets.token_urlsafe(16)
    tile = _template("tile.html").strip()
    tiles = []
    for index, name in enumerate(cameras):
        mode = "mjpeg" if index < MJPEG_TILES else "snapshot"
        encoded = quote(name, safe="")
        src = f"/stream/{encoded}.mjpg" if mode == "mjpeg" else f"/snapshot/{encoded}.jpg"
        tiles.append(tile.format(name=html.escape(name, quote=True), src=html.escape(src, quote=True), mode=mode))
    columns = max(1, math.ceil(math.sqrt(len(cameras))))
    page = (
        _template("page.html")
        .replace("{nonce}", nonce)
        .replace("{columns}", str(columns))
        .replace("{tiles}", "\n".join(tiles) or '<p class="empty">no cameras</p>')
    )
    return page.encode(), nonce
