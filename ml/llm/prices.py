"""What a call costs: the list prices of Anthropic's models, read from ``prices.toml``.

The table is data (``prices.toml`` beside this module, with its source): base rates only, so
a cost is an estimate; a model not listed gets "cost unknown" rather than a guess.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

PRICES_FILE = "prices.toml"


@cache
def price_table() -> dict[str, tuple[float, float]]:
    """Model id (without a date suffix) -> (input, output) USD per million tokens."""
    from tether.ml.tomlfile import tomllib  # tomllib, or tomli on Python 3.10

    text = resources.files(__package__).joinpath(PRICES_FILE).read_text(encoding="utf-8")
    models = tomllib.loads(text)["models"]
    return {name: (float(p["input"]), float(p["output"])) for name, p in models.items()}


def model_price(*, model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for ``model``, or None when not on file."""
    base = re.sub(r"-\d{8}$", "", model.strip())
    return price_table().get(base)


def estimate_cost_usd(*, model: str, input_tokens: int, output_tokens: int) -> float | None:
    price = model_price(model=model)
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1e6
