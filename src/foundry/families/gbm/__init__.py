"""The gbm family: gradient-boosted trees on LightGBM over table columns (native
categorical features, missing values, early stopping on the validation split), stored
as LightGBM's own text model format."""

from foundry.families.gbm.family import GBMFamily

__all__ = ["GBMFamily"]
