"""npsloop shared plumbing."""
