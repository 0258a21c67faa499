"""A weighted ensemble of a model search's candidates (`model.type: ensemble`), its
package holding each member's own package."""

from foundry.families.ensemble.family import EnsembleFamily

__all__ = ["EnsembleFamily"]
