"""The render configuration: everything that, with the source images and the seed, determines every sample."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

RECIPES = ("paper", "released")
IMAGENET_SIZE = 1_281_167
LOSSLESS_MAX_SIZE = 64  # at or below this patch size the default output is PNG: JPEG artefacts dominate 32px patches


@dataclass(frozen=True)
class RenderConfig:
    n_patches: int = IMAGENET_SIZE
    size: int = 256
    seed: int = 0
    recipe: str = "paper"
    scale: bool = True
    rotate: bool = True
    jitter: bool = True
    flip: bool = True
    format: str | None = None  # None: png at size <= 64, else jpg
    quality: int = 90
    shard_size: int = 10_000
    # paper recipe parameters (section 3.1)
    min_area: float = 1e-3
    aspect: tuple[float, float] = (3 / 4, 4 / 3)
    max_angle: float = 35.0
    jitter_range: tuple[float, float] = (0.6, 1.4)
    hue_range: float = 0.1

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}")
        if not 0 <= self.seed < 2**64:  # the per-sample Philox key is (seed << 64) | index, below 2**128
            raise ValueError("seed must be in 0..2**64-1")
        if self.n_patches < 1:
            raise ValueError("n_patches must be at least 1")
        if self.size < 8:
            raise ValueError("size must be at least 8 pixels")
        if self.shard_size < 1:
            raise ValueError("shard_size must be at least 1")
        if self.format is None:
            object.__setattr__(self, "format", "png" if self.size <= LOSSLESS_MAX_SIZE else "jpg")
        if self.format not in ("jpg", "png"):
            raise ValueError(f"unknown format {self.format!r}; choose jpg or png")
        if not 1 <= self.quality <= 100:
            raise ValueError("quality must be in 1..100")
        if not 0 < self.min_area <= 1:
            raise ValueError("min_area must be in (0, 1]")
        if not 0 <= self.max_angle <= 90:
            raise ValueError("max_angle must be in [0, 90] degrees")
        object.__setattr__(self, "aspect", tuple(float(a) for a in self.aspect))
        object.__setattr__(self, "jitter_range", tuple(float(a) for a in self.jitter_range))
        if self.recipe == "released":
            changed = [name for name in PAPER_RECIPE_FIELDS if getattr(self, name) != _DEFAULTS[name]]
            if changed:
                raise ValueError(f"{', '.join(changed)} set the paper recipe; the released recipe has its own")

    @property
    def n_shards(self) -> int:
        return -(-self.n_patches // self.shard_size)

    def shard_range(self, shard: int) -> range:
        first = shard * self.shard_size
        return range(first, min(first + self.shard_size, self.n_patches))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["aspect"] = list(self.aspect)
        d["jitter_range"] = list(self.jitter_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RenderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("aspect", "jitter_range"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


# Parameters that only the paper recipe reads; a released-recipe config must leave them at their defaults.
PAPER_RECIPE_FIELDS = ("min_area", "aspect", "max_angle", "jitter_range", "hue_range")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RenderConfig)}
