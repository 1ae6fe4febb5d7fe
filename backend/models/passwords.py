"""The password rules a new password must meet (the schemas validate with them; bcrypt is in security/)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

MIN_LENGTH = 8
MAX_BYTES = 72  # bcrypt's limit: longer is refused, never silently truncated
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line and not line.startswith("#"))


def validate_password_rules(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise ValueError(f"Password must be at least {MIN_LENGTH} characters")
    if len(password.encode("utf-8")) > MAX_BYTES:
        raise ValueError(f"Password must be at most {MAX_BYTES} bytes in UTF-8")
    if password.lower() in common_passwords():
        raise ValueError("Password is too common; choose another")
    return password
