"""A time-budgeted model search (`model: {type: auto}`): the candidate families trained
in turn, the best registered as its own model type with a leaderboard."""

from foundry.families.auto.family import AutoFamily

__all__ = ["AutoFamily"]
