"""npsloop digest service."""
