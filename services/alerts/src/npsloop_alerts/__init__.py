"""npsloop alerts service."""
