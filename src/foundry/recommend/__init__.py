"""Recommendation: interactions data and splits (data), ALS (als), ranking metrics
(metrics), the fitted model and exact top-k retrieval (model). The model family that
drives them through `foundry train` is `foundry.families.recommend`."""
