"""Routing: rules (stored, validated on write) and the pure engine that applies them."""
