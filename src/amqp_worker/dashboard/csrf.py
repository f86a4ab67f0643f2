"""CSRF tokens for the dashboard's state-changing POSTs.

One random token per dashboard process, embedded in every form it renders.
Another site can make a browser *send* a POST here, cookies and basic-auth
credentials included, but cannot *read* a page of this origin to learn the
token, so its POST is refused. Comparison is constant-time.
"""

from __future__ import annotations

import secrets

__all__ = ["CsrfToken"]


class CsrfToken:
    """The token of one dashboard; ``check`` says whether a submitted value is it."""

    def __init__(self, value: str | None = None) -> None:
        self.value = value or secrets.token_urlsafe(32)

    def __repr__(self) -> str:
        return "<CsrfToken ***>"

    def check(self, submitted: object) -> bool:
        """True only for exactly this token (a missing or non-str value is refused)."""
        return isinstance(submitted, str) and secrets.compare_digest(
            submitted.encode(), self.value.encode()
        )
