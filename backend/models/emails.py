"""The one canonical form of an email address: what is stored, compared and unique.

An address is first normalised as `email-validator` does at registration (NFC local part, IDNA/UTS-46
domain: fullwidth letters, case and compatibility forms mapped), then the whole address is case-folded
with Unicode's NFKC case fold, computed here in Python. Decision: the local part is case-folded too,
as the old `lower(email)` unique index already made it (`Ada@x.org` and `ada@x.org` were one account);
NFKC also folds its width (fullwidth `B` is `b`). The fold never depends on the database: PostgreSQL's
`lower()` follows the database's collation and SQLite's only knows ASCII, so neither is used to compare.
"""

from __future__ import annotations

import contextlib
import unicodedata

from email_validator import EmailNotValidError, validate_email

MAX_EMAIL_LENGTH = 320


def _nfkc_casefold(value: str) -> str:
    """Unicode's NFKC_Casefold (without its removal of default-ignorable characters), to a fixed point."""
    for _ in range(4):
        folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKD", value).casefold())
        if folded == value:
            break
        value = folded
    return value


def canonical_email(address: str) -> str:
    """The stored and compared form of `address`. Total: an address `email-validator` refuses (only a
    Better-Auth claim or a login attempt can be one) is folded as typed, so it matches nothing registered."""
    address = address.strip()
    with contextlib.suppress(EmailNotValidError):
        address = validate_email(address, check_deliverability=False).normalized
    return _nfkc_casefold(address)
