"""From raw body bytes to validated responses, or a problem naming every invalid field.

A body is one `ResponseIn` or a batch `{"responses": [...]}` of up to 500, validated as a whole:
one invalid response rejects the batch, and every problem carries its JSON pointer
(`/responses/3/score`). Validation runs on the bytes (`model_validate_json`), which is faster than
parsing to Python objects first and validating those.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import ValidationError

from npsloop_ingest.rejections import InvalidResponses, MalformedJson
from npsloop_shared.contracts import (
    ResponseBatchIn,
    ResponseBatchShape,
    ResponseIn,
    ResponseShape,
    needs_python_checks,
)
from npsloop_shared.errors import NpsloopError, validation_problems

# A batch's only member is "responses", so a batch body normally opens with it. Anything else is
# tried as a single response first; see `parse_responses` for the odd orderings.
_BATCH_OPENING = re.compile(rb'\s*\{\s*"responses"\s*:')


def parse_responses(body: bytes) -> Sequence[ResponseShape]:
    """The validated responses in `body`; raises `MalformedJson` or `InvalidResponses`.

    The usual body is checked by the native-only `ResponseShape`; a body it refuses, or one
    that might fail a Python-level check, is validated again by `ResponseIn`, whose problems
    are the ones reported (so every invalid field is named, whichever check it failed).
    """
    is_batch = _BATCH_OPENING.match(body) is not None
    try:
        items = (
            ResponseBatchShape.model_validate_json(body).responses
            if is_batch
            else (ResponseShape.model_validate_json(body),)
        )
    except ValidationError:
        pass
    else:
        if not needs_python_checks(body, items):
            return items
    return _parse_batch(body) if is_batch else _parse_single(body)


def _parse_single(body: bytes) -> Sequence[ResponseIn]:
    try:
        return (ResponseIn.model_validate_json(body),)
    except ValidationError as exc:
        if _mentions_responses_member(exc):
            # `{"x": 1, "responses": [...]}`: report it as the batch it tried to be.
            return _parse_batch(body)
        raise _rejection(exc) from None


def _parse_batch(body: bytes) -> Sequence[ResponseIn]:
    try:
        return ResponseBatchIn.model_validate_json(body).responses
    except ValidationError as exc:
        raise _rejection(exc) from None


def _mentions_responses_member(exc: ValidationError) -> bool:
    return any(
        error["type"] == "extra_forbidden" and error["loc"] == ("responses",)
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    )


def _rejection(exc: ValidationError) -> NpsloopError:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    malformed = next((e for e in errors if e["type"] == "json_invalid"), None)
    if malformed is not None:
        # pydantic's message gives line and column, never the input itself.
        return MalformedJson(f"The body is not valid JSON: {malformed['msg']}")
    problems = validation_problems(exc)
    noun = "field is" if len(problems) == 1 else "fields are"
    return InvalidResponses(
        f"{len(problems)} {noun} invalid; nothing was accepted.", errors=problems
    )
