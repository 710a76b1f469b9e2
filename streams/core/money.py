"""Integer money: minor units, ISO 4217 codes, and the one rounding rule the spec uses.

Floats never touch money here: a day's penalty interest is an integer division rounded
half to even, exactly as SPEC §3 prescribes.
"""

from __future__ import annotations

from functools import lru_cache

import iso4217


@lru_cache(maxsize=512)
@lru_cache(maxsize=1024)
def is_currency(code: str) -> bool:
    """True for an active ISO 4217 alphabetic code (``CNY``, ``USD``...)."""
    if len(code) != 3 or not code.isalpha() or not code.isupper():
        return False
    try:
        iso4217.Currency(code)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=512)
def minor_unit_exponent(code: str) -> int:
    """Digits after the decimal point for a currency (CNY 2, JPY 0); 2 when ISO gives none."""
    exponent = iso4217.Currency(code).exponent
    return 2 if exponent is None else int(exponent)


def div_round_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half to even, in integers (both ≥ 0, denominator > 0)."""
    q, r = divmod(numerator, denominator)
    twice = 2 * r
    if twice > denominator or (twice == denominator and q % 2 == 1):
        return q + 1
    return q


def daily_penalty(outstanding: int, penalty_rate_bps: int) -> int:
    """One day's penalty interest on an outstanding amount: outstanding × bps / 10000 / 365, half-even."""
    if outstanding <= 0 or penalty_rate_bps <= 0:
        return 0
    return div_round_half_even(outstanding * penalty_rate_bps, 10_000 * 365)
