"""The canonical email form (backend/models/emails.py): one function, the same result however it is typed."""

from __future__ import annotations

import pytest

from backend.models.emails import canonical_email

FULLWIDTH_EXAMPLE = "\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25"


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("  Ada.Lovelace@Example.COM ", "ada.lovelace@example.com"),  # the local part is case-folded too
        (f"bob@{FULLWIDTH_EXAMPLE}.org", "bob@example.org"),
        ("\uff22\uff2f\uff22@example.org", "bob@example.org"),  # a fullwidth local part
        ("\u0130nci@example.org", "i\u0307nci@example.org"),  # what Python folds, whatever the database would
        ("Stra\u00dfe@example.org", "strasse@example.org"),
        ("a@b", "a@b"),  # refused by email-validator (a login attempt, a claim): folded as typed, matches nothing
    ],
)
def test_canonical_form(typed: str, canonical: str) -> None:
    assert canonical_email(typed) == canonical
    assert canonical_email(canonical) == canonical  # a fixed point: the migration and lookups may reapply it
