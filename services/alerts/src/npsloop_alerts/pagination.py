"""Limit/offset pagination shared by every list endpoint: a total and a `next` link."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Generic, Protocol, TypeVar

from fastapi import Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.datastructures import URL

_T = TypeVar("_T")
_Row = TypeVar("_Row")
_Row_co = TypeVar("_Row_co", covariant=True)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_OFFSET = 2**63 - 1  # PostgreSQL's OFFSET is a bigint


class Page(BaseModel, Generic[_T]):
    """One page of a list in a stable order; follow `next` until it is null."""

    items: list[_T]
    total: int = Field(description="Items across all pages.")
    limit: int
    offset: int
    next: str | None = Field(description="Relative URL of the next page, or null on the last.")


class PageQuery(Protocol[_Row_co]):
    """A service's list method: one page of rows in a stable order, and the total across pages."""

    def __call__(self, *, limit: int, offset: int) -> Awaitable[tuple[Sequence[_Row_co], int]]: ...


@dataclass(frozen=True, slots=True)
class PageParams:
    """The page a request asks for (`limit`, `offset`) and its URL, for the `next` link."""

    limit: int
    offset: int
    url: URL

    async def fetch(self, query: PageQuery[_Row], item: Callable[[_Row], _T]) -> Page[_T]:
        """Run `query` for this page and render every row with `item`."""
        rows, total = await query(limit=self.limit, offset=self.offset)
        return self.page([item(row) for row in rows], total=total)

    def page(self, items: list[_T], *, total: int) -> Page[_T]:
        following = self.offset + self.limit
        next_url = None
        if following < total:
            url = self.url.include_query_params(limit=self.limit, offset=following)
            next_url = f"{url.path}?{url.query}"
        return Page[_T](
            items=items, total=total, limit=self.limit, offset=self.offset, next=next_url
        )


def page_params(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")] = (
        DEFAULT_LIMIT
    ),
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset, url=request.url)


Paging = Annotated[PageParams, Depends(page_params)]
