"""The recommend family: popularity and ALS matrix factorization over an interactions
table (`model.type` popularity / mf, the `recommend` config section)."""

from foundry.families.recommend.family import RecommendFamily

__all__ = ["RecommendFamily"]
