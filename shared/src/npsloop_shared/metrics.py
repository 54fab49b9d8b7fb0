"""Metric sets registered once per Prometheus registry (the global one, or a test's own)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry

_M = TypeVar("_M")


class PerRegistry(Generic[_M]):
    """Call it for the metric set of a registry: `register` runs on the first call per registry,
    later calls return the same set (registering a metric name twice would raise)."""

    def __init__(self, register: Callable[[CollectorRegistry], _M]) -> None:
        self._register = register
        self._by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _M] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self, registry: CollectorRegistry | None = None) -> _M:
        target = REGISTRY if registry is None else registry
        metrics = self._by_registry.get(target)
        if metrics is None:
            metrics = self._by_registry[target] = self._register(target)
        return metrics
