"""What may be printed of a broker URL: the redaction rules, in one place and without state.

Two layers, because neither is enough alone:

* **Known secrets.** :func:`url_secrets` lists the passwords a URL holds, in every
  spelling a message might carry them (as written, %-decoded, %-encoded), and
  :func:`redact` replaces each wherever it appears. This catches a password
  that a library echoes on its own, outside any URL.
* **Any URL.** :func:`redact` also blanks the userinfo (``user:password@``) of
  every ``scheme://`` URL in the text, known or not. This catches URLs no one
  told us about, e.g. a mistyped argument echoed by click.

Both read a URL *conservatively*: its credentials run from ``://`` to the last
``@`` before whitespace or the next ``,scheme://``. So a password with a raw
``@`` or ``/`` (which a URL should %-encode) and each URL of a comma-separated
list stay hidden too. The price: a vhost with a raw ``@`` (write it ``%40``)
is taken for credentials and not shown.

Every function here is pure: callers pass in the secrets they know.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

__all__ = ["MASK", "describe_url", "redact", "split_urls", "url_secrets"]

#: What a secret is replaced with.
MASK = "***"

_SCHEME = r"[a-z][a-z0-9+.-]*://"

#: A comma (and spaces) that starts the next URL of a list.
_NEXT_URL = re.compile(rf",\s*(?={_SCHEME})", re.IGNORECASE)

#: ``scheme://`` then userinfo: up to the last ``@`` before whitespace or the next URL.
_USERINFO = re.compile(
    rf"(?P<scheme>{_SCHEME})(?P<userinfo>(?:(?!,\s*{_SCHEME})\S)*)@", re.IGNORECASE
)

#: Secrets shorter than this are replaced only as whole words: replacing a
#: two-letter password inside every word would make the message unreadable.
SHORT_SECRET = 4


def split_urls(text: str) -> list[str]:
    """The URLs of a comma-separated list (a single URL is a list of one).

    A comma splits only where a ``scheme://`` follows, so a comma inside a
    password or vhost does not.
    """
    return [part.strip() for part in _NEXT_URL.split(text) if part.strip()]


def _passwords(url: str) -> set[str]:
    """The password of ``url`` as urllib reads it and as the conservative rule reads it."""
    found: set[str] = set()
    match = _USERINFO.search(url)
    if match is not None:
        _, colon, password = match["userinfo"].partition(":")
        if colon:
            found.add(password)
    try:
        password = urlsplit(url).password
    except ValueError:  # e.g. an unbalanced [ in the host: urllib gives up
        password = None
    if password:
        found.add(password)
    return found


def url_secrets(text: str) -> frozenset[str]:
    """Every spelling of every password in ``text``: a URL or a comma-separated list of URLs.

    For each password: as written, %-decoded, and %-encoded. Empty for a URL
    without a password. Usernames, hosts and vhosts are not secrets.
    """
    secrets: set[str] = set()
    for url in split_urls(text):
        for password in _passwords(url):
            secrets |= {password, unquote(password), quote(password, safe="")}
    secrets.discard("")
    return frozenset(secrets)


def _secret_pattern(secret: str) -> str:
    escaped = re.escape(secret)
    if len(secret) < SHORT_SECRET:
        return rf"(?<![A-Za-z0-9]){escaped}(?![A-Za-z0-9])"
    return escaped


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` and the userinfo of every URL replaced by :data:`MASK`.

    Longer secrets are replaced first, so one that contains another goes whole.
    """
    wanted = sorted({s for s in secrets if s}, key=len, reverse=True)
    if wanted:
        text = re.sub("|".join(_secret_pattern(s) for s in wanted), MASK, text)
    return _USERINFO.sub(rf"\g<scheme>{MASK}@", text)


def _describe_one(url: str) -> str:
    match = _USERINFO.match(url)
    # Drop the credentials the conservative way first, so a raw "/" in a
    # password cannot push the password's tail into the host or vhost.
    bare = f"{match['scheme']}{url[match.end() :]}" if match else url
    parts = None
    try:
        parts = urlsplit(bare)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or not parts.hostname:
        # Say so, and show nothing of it: the rest may be a mangled password.
        scheme = re.match(_SCHEME, bare, re.IGNORECASE)
        return f"{scheme[0] if scheme else '?://'}? (malformed URL)"
    port = parts.port or (5671 if parts.scheme.lower() == "amqps" else 5672)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return f"{parts.scheme}://{parts.hostname}:{port} vhost={vhost}"


def describe_url(url: str) -> str:
    """Scheme, host, port and vhost of an AMQP URL (of each, for a list): never credentials.

    For logs, banners and error messages: ``amqp://host:5672 vhost=/``. A list
    gives each URL's description, joined by ``", "``.
    """
    described = ", ".join(_describe_one(part) for part in split_urls(url)) or "?"
    # A description holds no userinfo; this catches a password that ended up in
    # the host or vhost of a URL too malformed to split as intended.
    return redact(described, url_secrets(url))
