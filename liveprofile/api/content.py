"""Open-time content: slot data from Redis, rendered by a sandboxed template engine.

Templates run in :class:`jinja2.sandbox.SandboxedEnvironment` (no access to
Python internals, so operator-supplied templates cannot escape) with
autoescaping on: every profile or catalogue value is HTML-escaped. Templates
come from ``LIVEPROFILE_API_TEMPLATES`` (``{slot}.html``) first, then the
built-ins below; a slot is known if either has ``{slot}.html``.

Built-in slots:

* ``cart`` — "your cart" from the profile's ``cart`` (JSON list of
  ``product_id, name, category, price, quantity``) and ``cart_value``;
* ``recommendations`` — "because you like {top_category}": the top products
  of ``{p}:category-top:{top_category}`` (ZSET, product -> popularity) read
  from ``{p}:product:{id}`` hashes, excluding products already in the cart;
  ``top_category`` falls back to the highest ``interests`` score.

When a slot has nothing personal to show — unknown user, empty cart, no
category — it renders ``fallback.html``: bestsellers across every category
(merged ``category-top`` ZSETs, cached for ``LIVEPROFILE_API_BESTSELLERS_TTL``).

Every template gets: ``user_id``, ``known``, ``profile`` (stored strings, JSON
fields decoded), ``experiments`` ({name: variant}), ``cart``,
``cart_value``, ``top_category``, ``products`` (the slot's product list),
``traits`` (the user's traits, ``{}`` when none: ``Hi {{ traits.first_name }}``) and
``fallback``. ``format=json`` returns that data instead of HTML.

Rendering runs off the event loop in worker processes, under a CPU-time and an output-size
limit (:mod:`liveprofile.api.render`): a template that loops for minutes or computes
``x ** 9999999`` costs its own request a 500 (``template_timeout``, ``template_error``,
``template_output_too_large``), never the API's other requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import orjson
import redis.asyncio as aioredis
from jinja2.sandbox import SandboxedEnvironment

from liveprofile.api.render import TemplateRenderer, sandbox
from liveprofile.store.keys import Keys
from operators.schema import BY_NAME, JSON_FIELDS, SHOWN

__all__ = ["Content", "BUILTIN_TEMPLATES", "JSON_FIELDS", "decode_profile", "UnknownSlot"]

#: profile fields that are the dataflow's bookkeeping, not profile data (operators.schema: ``shown=False``)
HIDDEN_FIELDS = frozenset(BY_NAME) - SHOWN

BUILTIN_TEMPLATES = {
    "cart.html": (
        '<div class="lp-cart"><h2>Your cart</h2><ul>'
        "{% for p in cart %}"
        '<li class="lp-item"><span class="lp-name">{{ p.name }}</span>'
        ' <span class="lp-qty">&times; {{ p.quantity }}</span>'
        ' <span class="lp-price">{{ p.price }}</span></li>'
        "{% endfor %}</ul>"
        '<p class="lp-total">Total: {{ cart_value }}</p></div>'
    ),
    "recommendations.html": (
        '<div class="lp-recs"><h2>Because you like {{ top_category }}</h2><ul>'
        "{% for p in products %}"
        '<li class="lp-item">{% if p.url %}<a href="{{ p.url }}">{% endif %}'
        '{% if p.image_url %}<img src="{{ p.image_url }}" alt="{{ p.name }}">{% endif %}'
        '<span class="lp-name">{{ p.name }}</span>{% if p.url %}</a>{% endif %}'
        ' <span class="lp-price">{{ p.price }}</span></li>'
        "{% endfor %}</ul></div>"
    ),
    "fallback.html": (
        '<div class="lp-bestsellers"><h2>Bestsellers</h2><ul>'
        "{% for p in products %}"
        '<li class="lp-item">{% if p.url %}<a href="{{ p.url }}">{% endif %}'
        '<span class="lp-name">{{ p.name }}</span>{% if p.url %}</a>{% endif %}'
        ' <span class="lp-price">{{ p.price }}</span></li>'
        "{% endfor %}</ul></div>"
    ),
}


class UnknownSlot(LookupError):
    """No template for the requested slot."""


def decode_profile(raw: Mapping[str, str]) -> dict[str, Any]:
    """A stored profile hash as API data: strings as stored, JSON fields decoded, bookkeeping hidden.

    >>> decode_profile({"user_id": "u", "cart": "[]", "seq": "4", "interests": "{bad"})
    {'user_id': 'u', 'cart': [], 'interests': '{bad'}
    """
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k in HIDDEN_FIELDS:
            continue
        if k in JSON_FIELDS and v:
            try:
                out[k] = orjson.loads(v)
                continue
            except orjson.JSONDecodeError:
                pass
        out[k] = v
    return out


def _top_category(profile: Mapping[str, Any]) -> str | None:
    cat = profile.get("top_category")
    if isinstance(cat, str) and cat:
        return cat
    interests = profile.get("interests")
    if isinstance(interests, dict) and interests:
        try:
            return str(max(interests.items(), key=lambda kv: float(kv[1]))[0])
        except (TypeError, ValueError):
            return None
    return None


def _cart(profile: Mapping[str, Any]) -> list[dict[str, Any]]:
    cart = profile.get("cart")
    if not isinstance(cart, list):
        return []
    return [p for p in cart if isinstance(p, dict)]


@dataclass
class Content:
    """Builds slot data from Redis and renders it (see module docstring)."""

    client: aioredis.Redis
    prefix: str
    templates_dir: str | None = None
    count: int = 4
    bestsellers_ttl: float = 30.0
    template_timeout_s: float = 2.0
    template_max_bytes: int = 1 << 20
    env: SandboxedEnvironment = field(init=False)
    renderer: TemplateRenderer = field(init=False)
    _best: tuple[float, list[dict[str, Any]]] = field(default=(-1e18, []), init=False)
    _best_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _keys: Keys = field(init=False)

    def __post_init__(self) -> None:
        self._keys = Keys(self.prefix)  # the catalogue keys are the same in both layouts
        self.env = sandbox(self.templates_dir, BUILTIN_TEMPLATES, self.template_max_bytes)  # slot lookups here
        self.renderer = TemplateRenderer(self.templates_dir, BUILTIN_TEMPLATES, timeout_s=self.template_timeout_s,
                                         max_bytes=self.template_max_bytes)  # fmt: skip

    def has_slot(self, slot: str) -> bool:
        if not slot.replace("_", "").replace("-", "").isalnum():
            return False
        try:
            self.env.get_template(f"{slot}.html")
        except jinja2.TemplateNotFound:
            return False
        return True

    # -- data ------------------------------------------------------------------
    async def _products(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for pid in ids:
            pipe.hgetall(self._keys.product(pid))
        out = []
        for pid, h in zip(ids, await pipe.execute(), strict=True):
            if h:
                out.append({"product_id": pid, **h})
        return out

    async def recommendations(self, category: str, exclude: set[str]) -> list[dict[str, Any]]:
        """Top products of ``category`` not in ``exclude``."""
        ids = await self.client.zrevrange(self._keys.category_top(category), 0, self.count + len(exclude) - 1)
        return await self._products([i for i in ids if i not in exclude][: self.count])

    async def bestsellers(self) -> list[dict[str, Any]]:
        """Top products across all categories (cached)."""
        at, best = self._best
        if time.monotonic() - at < self.bestsellers_ttl:
            return best
        async with self._best_lock:
            at, best = self._best
            if time.monotonic() - at < self.bestsellers_ttl:
                return best
            keys = [k async for k in self.client.scan_iter(match=self._keys.category_top("*"), count=1000)]
            pipe = self.client.pipeline(transaction=False)
            for k in keys:
                pipe.zrevrange(k, 0, self.count - 1, withscores=True)
            scores: dict[str, float] = {}
            for rows in await pipe.execute() if keys else []:
                for pid, score in rows:
                    scores[pid] = max(scores.get(pid, float("-inf")), float(score))
            top = sorted(scores, key=lambda p: (-scores[p], p))[: self.count]
            best = await self._products(top)
            self._best = (time.monotonic(), best)
            return best

    async def data(self, slot: str, user_id: str, profile: Mapping[str, Any] | None, experiments: dict[str, str]) -> dict[str, Any]:
        """The template variables of ``slot`` for a user (``profile`` None: unknown user)."""
        prof = dict(profile or {})
        cart = _cart(prof)
        cat = _top_category(prof)
        ctx: dict[str, Any] = {
            "slot": slot, "user_id": user_id, "known": profile is not None, "profile": prof,
            "experiments": experiments, "cart": cart, "cart_value": prof.get("cart_value", ""),
            "top_category": cat, "products": [], "fallback": False,
            "traits": prof["traits"] if isinstance(prof.get("traits"), dict) else {},
        }  # fmt: skip
        if slot == "cart":
            ctx["fallback"] = not cart
        elif slot == "recommendations" or slot not in ("cart", "fallback"):
            if cat:
                ctx["products"] = await self.recommendations(cat, {str(p.get("product_id")) for p in cart})
            ctx["fallback"] = slot == "recommendations" and not ctx["products"]
        if profile is None or ctx["fallback"] or slot == "fallback":
            ctx["fallback"] = True
            ctx["products"] = await self.bestsellers()
        return ctx

    async def render(self, slot: str, ctx: dict[str, Any]) -> str:
        """HTML of a slot (in a render worker; :class:`~liveprofile.api.render.RenderError` when
        refused); the fallback template stands in for built-in slots with nothing to show."""
        name = "fallback.html" if ctx.get("fallback") and slot in ("cart", "recommendations") else f"{slot}.html"
        return await self.renderer.render(name, ctx)
