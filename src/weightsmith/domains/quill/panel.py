"""Daily market panels: the data a Quill program runs on.

``make_panel`` builds a seeded synthetic market: log prices follow a random walk driven by a
market factor, a sector factor and noise; volume is persistent and rises on big moves; a few
assets list late (NaN before their first day), so programs meet missing data the way they do
on real panels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from weightsmith.errors import UserError

SERIES_FIELDS = ("close", "open", "high", "low", "volume", "returns")
SECTOR_NAMES = ("tech", "energy", "health", "finance", "retail", "utilities")


@dataclass(frozen=True)
class Panel:
    """Fields of shape (days, assets), sector labels of shape (assets,)."""

    fields: dict[str, np.ndarray]
    sector: np.ndarray
    sector_names: tuple[str, ...]
    assets: tuple[str, ...]
    seed: int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.fields["close"].shape

    def __getitem__(self, name: str) -> np.ndarray:
        return self.sector if name == "sector" else self.fields[name]


def panel_from_arrays(sector, returns=None, **fields) -> Panel:
    """Build a panel from hand-made arrays (tests, examples).

    Args:
        sector: int label per asset.
        returns: optional; derived from ``close`` (close / previous close - 1) when omitted.
        **fields: close, open, high, low, volume, each (days, assets).
    """
    missing = [f for f in SERIES_FIELDS if f != "returns" and f not in fields]
    if missing:
        raise UserError(f"panel_from_arrays: missing field(s) {', '.join(missing)}.")
    arrays = {name: np.array(value, dtype=float) for name, value in fields.items()}
    if returns is None:
        close = arrays["close"]
        returns = np.full_like(close, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            returns[1:] = close[1:] / close[:-1] - 1.0
    arrays["returns"] = np.array(returns, dtype=float)
    shape = arrays["close"].shape
    for name, value in arrays.items():
        if value.shape != shape or value.ndim != 2:
            raise UserError(f"panel_from_arrays: field '{name}' has shape {value.shape}, expected {shape}.")
    sector = np.asarray(sector, dtype=int)
    if sector.shape != (shape[1],):
        raise UserError(f"panel_from_arrays: sector has shape {sector.shape}, expected ({shape[1]},).")
    names = tuple(SECTOR_NAMES[i % len(SECTOR_NAMES)] for i in range(int(sector.max()) + 1))
    assets = tuple(f"A{i:02d}" for i in range(shape[1]))
    return Panel({f: arrays[f] for f in SERIES_FIELDS}, sector, names, assets)


def make_panel(seed: int, days: int = 80, assets: int = 12, sectors: int = 3, late_listings: bool = True) -> Panel:
    """A seeded synthetic market panel; the same arguments always give the same numbers.

    Args:
        seed: random seed.
        days, assets: panel size.
        sectors: number of sectors (at most 6); assets are dealt round-robin.
        late_listings: when True, about one asset in six lists after day 0 (NaN before it).
    """
    if days < 2 or assets < 2 or not 1 <= sectors <= len(SECTOR_NAMES):
        raise UserError(f"make_panel: need days >= 2, assets >= 2 and 1..{len(SECTOR_NAMES)} sectors.")
    rng = np.random.default_rng(seed)
    sector = np.arange(assets) % sectors
    vol = rng.uniform(0.01, 0.03, size=assets)  # daily idiosyncratic volatility per asset
    market = rng.normal(0.0003, 0.01, size=(days, 1))
    sector_moves = rng.normal(0.0, 0.007, size=(days, sectors))[:, sector]
    beta = rng.uniform(0.6, 1.4, size=assets)
    log_ret = beta * market + sector_moves + rng.normal(0.0, 1.0, size=(days, assets)) * vol
    log_close = np.log(rng.uniform(10, 200, size=assets)) + np.cumsum(log_ret, axis=0)
    close = np.exp(log_close)

    prev_close = np.vstack([close[:1] * np.exp(-log_ret[:1]), close[:-1]])
    open_ = prev_close * np.exp(rng.normal(0.0, 0.4, size=(days, assets)) * vol)
    top, bottom = np.maximum(open_, close), np.minimum(open_, close)
    high = top * np.exp(np.abs(rng.normal(0.0, 0.5, size=(days, assets))) * vol)
    low = bottom * np.exp(-np.abs(rng.normal(0.0, 0.5, size=(days, assets))) * vol)

    # Log volume: an asset-level size, an AR(1) drift, and a kick on days with big moves.
    size = rng.uniform(np.log(2e5), np.log(5e6), size=assets)
    drift = np.zeros((days, assets))
    shocks = rng.normal(0.0, 0.25, size=(days, assets))
    for day in range(1, days):
        drift[day] = 0.8 * drift[day - 1] + shocks[day]
    volume = np.round(np.exp(size + drift + 8.0 * np.abs(log_ret - market)))

    fields = {"close": close, "open": open_, "high": high, "low": low, "volume": volume}
    if late_listings:
        for asset in rng.choice(assets, size=max(1, assets // 6), replace=False):
            first_day = int(rng.integers(1, max(2, days // 4)))
            for values in fields.values():
                values[:first_day, asset] = np.nan
    # Prices are quoted to the cent, so two programs that agree on paper agree in floating point.
    for name in ("close", "open", "high", "low"):
        fields[name] = np.round(fields[name], 2)
    returns = np.full((days, assets), np.nan)
    returns[1:] = fields["close"][1:] / fields["close"][:-1] - 1.0
    panel = panel_from_arrays(sector, returns=returns, **fields)
    return Panel(panel.fields, sector, SECTOR_NAMES[:sectors], panel.assets, seed)
