"""Kafka plumbing: idempotent producer, at-least-once consumer with a dead-letter queue, topics."""
