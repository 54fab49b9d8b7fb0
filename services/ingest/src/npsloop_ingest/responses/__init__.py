"""Receiving NPS responses: parse, validate, produce, answer."""
