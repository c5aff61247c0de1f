"""The simulator's model catalogue and prices (no state)."""

from __future__ import annotations

import math
from typing import Any

#: The simulator's model list: (id, label, version, isVip, style, category).
MODELS: list[tuple[int, str, str, bool, str, str]] = [
    (2000, "Anime Style", "v5", False, "anime", "default"),
    (2004, "Pixar Style", "v5", False, "pixar", "default"),
    (2005, "Clay Style", "v5", True, "clay", "default"),
    (2006, "Oil Painting", "v5", False, "oil", "art"),
    (2007, "Watercolor", "v5", False, "watercolor", "art"),
    (2012, "Pencil Sketch", "v5", False, "pencil", "art"),
    (2008, "Cyberpunk", "v5", False, "cyberpunk", "scifi"),
]
CATEGORIES: list[tuple[str, str]] = [("Popular", "default"), ("Art", "art"), ("Sci-Fi", "scifi")]
MODELS_BY_ID = {m[0]: m for m in MODELS}

RESOLUTION_HEIGHT = {"540p": 540, "720p": 720}


def model_list(public_base: str) -> list[dict[str, Any]]:
    """The modellist `data`: categories with their models (preview URLs under `public_base`)."""
    cats = []
    for label, value in CATEGORIES:
        items = [
            {
                "label": m[1],
                "value": m[0],
                "version": m[2],
                "isVip": m[3],
                "url": f"{public_base}/sim/previews/{m[0]}.jpg",
            }
            for m in MODELS
            if m[5] == value
        ]
        cats.append({"label": label, "value": value, "list": items})
    return cats


def cost(config: dict[str, Any], model: int, duration: int, resolution: str) -> int:
    """ceil(duration) x rate(resolution), x vip_multiplier for VIP models (rounded up)."""
    rate = float(config["rates"].get(resolution, 0))
    c = math.ceil(duration) * rate
    if MODELS_BY_ID[model][3]:
        c *= float(config["vip_multiplier"])
    return math.ceil(c - 1e-9)
