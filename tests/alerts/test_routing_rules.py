"""Rule definitions are validated (and normalised) before they are stored."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from npsloop_alerts.routing.rules import RuleDefinition, normalise_text


def definition(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "r",
        "actions": [{"recipients": ["owner"], "channels": ["email"]}],
    }
    return {**values, **overrides}


def error_locations(payload: dict[str, Any]) -> list[tuple[str | int, ...]]:
    with pytest.raises(ValidationError) as caught:
        RuleDefinition.model_validate(payload)
    return [error["loc"] for error in caught.value.errors()]


def test_keywords_are_normalised_and_deduplicated() -> None:
    rule = RuleDefinition.model_validate(
        definition(match={"keywords": ["Cancel", "ＣＡＮＣＥＬ", " cancel ", "取消", "Não  Gosto"]})
    )

    assert rule.match.keywords == ["cancel", "取消", "não gosto"]


def test_normalise_text_is_unicode_aware() -> None:
    assert normalise_text("Straße") == "strasse"  # casefold, not lower
    assert normalise_text("ｶﾀｶﾅ") == "カタカナ"  # half-width katakana (NFKC)
    assert normalise_text("a\u00a0\tb") == "a b"


@pytest.mark.parametrize(
    ("payload", "location"),
    [
        (definition(match={"keywords": ["   "]}), ("match", "keywords", 0)),
        (definition(match={"keywords": ["x" * 65]}), ("match", "keywords", 0)),
        (definition(match={"buckets": ["angry"]}), ("match", "buckets", 0)),
        (definition(match={"kinds": ["survey"]}), ("match", "kinds", 0)),
        (definition(match={"colour": ["red"]}), ("match", "colour")),
        (definition(actions=[]), ("actions",)),
        (
            definition(actions=[{"recipients": ["boss"], "channels": ["email"]}]),
            ("actions", 0, "recipients", 0),
        ),
        (
            definition(actions=[{"recipients": ["person:"], "channels": ["email"]}]),
            ("actions", 0, "recipients", 0),
        ),
        (
            definition(actions=[{"recipients": ["owner"], "channels": ["fax"]}]),
            ("actions", 0, "channels", 0),
        ),
        (
            definition(actions=[{"recipients": ["owner"], "channels": []}]),
            ("actions", 0, "channels"),
        ),
        (
            definition(actions=[{"recipients": ["owner"], "channels": ["email"], "mode": "some"}]),
            ("actions", 0, "mode"),
        ),
        (definition(priority=-1), ("priority",)),
        (definition(name=""), ("name",)),
    ],
)
def test_invalid_rules_are_refused_with_the_field(
    payload: dict[str, Any], location: tuple[str | int, ...]
) -> None:
    assert location in error_locations(payload)


def test_all_available_cannot_be_combined_with_named_channels() -> None:
    payload = definition(
        actions=[{"recipients": ["owner"], "channels": ["all_available", "email"]}]
    )
    with pytest.raises(ValidationError, match="all_available cannot be combined"):
        RuleDefinition.model_validate(payload)


def test_person_references_name_their_position() -> None:
    rule = RuleDefinition.model_validate(
        definition(
            actions=[
                {"recipients": ["owner"], "channels": ["email"]},
                {"recipients": ["manager", "person:ceo"], "channels": ["slack"]},
            ]
        )
    )

    assert rule.person_references() == [(1, 1, "ceo")]
