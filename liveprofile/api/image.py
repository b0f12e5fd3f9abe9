"""A content slot as a PNG image, for mail clients that load images but run no HTML from us.

:func:`render_png` draws the slot data of :meth:`liveprofile.api.content.Content.data`: a heading
("Your cart", "Because you like {category}", "Bestsellers") and one row per product with its name
and price (the cart: quantity too). The image is 600 px wide (an email's usual width), one row per
product, at most :data:`MAX_ROWS` rows; text is Pillow's built-in font (no font files to deploy),
cut to fit. Pure CPU work, bounded by the row limit: the API runs it in a thread.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

__all__ = ["render_png", "heading", "MAX_ROWS", "WIDTH"]

WIDTH = 600
MAX_ROWS = 20
_PAD, _HEAD, _ROW = 16, 48, 36
_BG, _FG, _MUTED, _RULE = (255, 255, 255), (17, 17, 17), (90, 90, 90), (225, 225, 225)


def heading(ctx: Mapping[str, Any]) -> str:
    """The heading of a slot's image.

    >>> heading({"slot": "recommendations", "top_category": "shoes", "fallback": False})
    'Because you like shoes'
    >>> heading({"slot": "cart", "fallback": True})
    'Bestsellers'
    """
    if ctx.get("fallback"):
        return "Bestsellers"
    if ctx.get("slot") == "cart":
        return "Your cart"
    cat = ctx.get("top_category")
    return f"Because you like {cat}" if cat else "Picked for you"


def _rows(ctx: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    items = ctx.get("cart") if ctx.get("slot") == "cart" and not ctx.get("fallback") else ctx.get("products")
    return [p for p in items or [] if isinstance(p, Mapping)][:MAX_ROWS]


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def render_png(ctx: Mapping[str, Any]) -> bytes:
    """The slot as PNG bytes (see module docstring)."""
    rows = _rows(ctx)
    height = _PAD + _HEAD + max(len(rows), 1) * _ROW + _PAD
    img = Image.new("RGB", (WIDTH, height), _BG)
    d = ImageDraw.Draw(img)
    big = ImageFont.load_default(size=22)
    font = ImageFont.load_default(size=16)
    d.text((_PAD, _PAD), _fit(d, heading(ctx), big, WIDTH - 2 * _PAD), fill=_FG, font=big)
    y = _PAD + _HEAD
    if not rows:
        d.text((_PAD, y + 8), "Nothing to show yet", fill=_MUTED, font=font)
    for p in rows:
        d.line((_PAD, y, WIDTH - _PAD, y), fill=_RULE)
        price = str(p.get("price") or "")
        qty = p.get("quantity")
        right = f"{qty} × {price}" if ctx.get("slot") == "cart" and qty not in (None, "") else price
        rw = int(d.textlength(right, font=font))
        name = _fit(d, str(p.get("name") or p.get("product_id") or ""), font, WIDTH - 3 * _PAD - rw)
        d.text((_PAD, y + 9), name, fill=_FG, font=font)
        d.text((WIDTH - _PAD - rw, y + 9), right, fill=_MUTED, font=font)
        y += _ROW
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
