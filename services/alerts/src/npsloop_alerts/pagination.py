"""Limit/offset pagination shared by every list endpoint: a total and a `next` link."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query, Request
from pydantic import BaseModel, Field

_T = TypeVar("_T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class Page(BaseModel, Generic[_T]):
    """One page of a list in a stable order; follow `next` until it is null."""

    items: list[_T]
    total: int = Field(description="Items across all pages.")
    limit: int
    offset: int
    next: str | None = Field(description="Relative URL of the next page, or null on the last.")


class PageParams(BaseModel):
    limit: int
    offset: int


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")] = (
        DEFAULT_LIMIT
    ),
    offset: Annotated[int, Query(ge=0, description="Items to skip.")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


Paging = Annotated[PageParams, Depends(page_params)]


def make_page(request: Request, items: list[_T], *, total: int, params: PageParams) -> Page[_T]:
    following = params.offset + params.limit
    next_url = None
    if following < total:
        url = request.url.include_query_params(limit=params.limit, offset=following)
        next_url = f"{url.path}?{url.query}"
    return Page[_T](
        items=items, total=total, limit=params.limit, offset=params.offset, next=next_url
    )
