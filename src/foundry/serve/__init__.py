"""Serving: an authenticated, metered, rate-limited prediction API (see docs/SERVING.md)."""
