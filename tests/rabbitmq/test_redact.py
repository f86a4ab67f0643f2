"""Redaction rules: no password is ever printed, whatever the URL looks like."""

from __future__ import annotations

import pytest

from amqp_worker._rabbitmq.redact import MASK, describe_url, redact, split_urls, url_secrets

#: Awkward URLs, each with its password, which must never survive redaction.
AWKWARD = [
    ("amqp://user:s3cret-pw@host/", "s3cret-pw"),
    ("amqp://user:s3cret@pw@host/vh", "s3cret@pw"),  # raw @: urllib splits at the last one
    ("amqp://user:s3cret/pw@host/", "s3cret/pw"),  # raw /: urllib takes "user" for the host
    ("amqp://user:1234/s3cret@host/", "1234/s3cret"),  # ... and "1234" for a valid port
    ("amqp://user:s3cret%40pw@host/", "s3cret%40pw"),  # %-escaped: s3cret@pw on the wire
    ("amqp://user:s3cret%2Fpw@host:5673/%2F", "s3cret%2Fpw"),
    ("amqps://user:s3cret,pw@host/", "s3cret,pw"),  # a comma that starts no URL
    ("amqp://user:s3cret pw@host/", "s3cret pw"),  # whitespace: not a URL char, still hidden
]

LIST = "amqp://a:s3cret-one@h1/,amqp://b:s3cret-two@h2:5673/vh, amqps://c:s3cret-3@h3/"


@pytest.mark.parametrize(("url", "password"), AWKWARD)
def test_url_secrets_hold_every_spelling_of_the_password(url: str, password: str) -> None:
    secrets = url_secrets(url)
    assert password in secrets
    if "%" in password:
        assert password.replace("%40", "@").replace("%2F", "/") in secrets


@pytest.mark.parametrize(("url", "password"), AWKWARD)
def test_describe_url_never_shows_the_password(url: str, password: str) -> None:
    described = describe_url(url)
    for part in (password, "s3cret", "pw@", "user"):
        assert part not in described, described


@pytest.mark.parametrize(("url", "password"), AWKWARD)
def test_redact_hides_a_known_password_anywhere(url: str, password: str) -> None:
    text = f"failed: {url} (login {password!r} refused; {password})"
    redacted = redact(text, url_secrets(url))
    assert "s3cret" not in redacted, redacted
    assert redacted.startswith("failed: amqp")


@pytest.mark.parametrize(
    "url",
    [url for url, _ in AWKWARD if " " not in url],  # a URL cannot hold whitespace unescaped
)
def test_redact_hides_the_credentials_of_any_url_unasked(url: str) -> None:
    redacted = redact(f"Got unexpected extra argument ({url})")
    assert "s3cret" not in redacted, redacted
    assert f"://{MASK}@host" in redacted


def test_a_list_of_urls() -> None:
    assert split_urls(LIST) == [
        "amqp://a:s3cret-one@h1/",
        "amqp://b:s3cret-two@h2:5673/vh",
        "amqps://c:s3cret-3@h3/",
    ]
    assert url_secrets(LIST) == {"s3cret-one", "s3cret-two", "s3cret-3"}
    assert describe_url(LIST) == (
        "amqp://h1:5672 vhost=/, amqp://h2:5673 vhost=vh, amqps://h3:5671 vhost=/"
    )
    assert redact(f"bad url {LIST}") == (
        f"bad url amqp://{MASK}@h1/,amqp://{MASK}@h2:5673/vh, amqps://{MASK}@h3/"
    )


@pytest.mark.parametrize(
    ("url", "described"),
    [
        ("amqp://localhost", "amqp://localhost:5672 vhost=/"),
        ("amqps://u:p@rabbit.internal/prod", "amqps://rabbit.internal:5671 vhost=prod"),
        ("amqp://guest:guest@127.0.0.1:5673/%2F", "amqp://127.0.0.1:5673 vhost=/"),
        ("amqp://h/a%40b", "amqp://h:5672 vhost=a@b"),
        ("amqp://h:99999999/", "amqp://? (malformed URL)"),
        ("amqp://u:s3cret@/", "amqp://? (malformed URL)"),
        ("amqp://[::1/", "amqp://? (malformed URL)"),
        ("s3cret", "?://? (malformed URL)"),
    ],
)
def test_describe_url(url: str, described: str) -> None:
    assert describe_url(url) == described


def test_a_raw_at_in_the_vhost_is_taken_for_credentials() -> None:
    # The conservative reading (documented): "h/v" could be a password's tail.
    assert describe_url("amqp://h/v@x") == "amqp://x:5672 vhost=/"


def test_no_password_no_secrets() -> None:
    assert url_secrets("amqp://user@host/") == frozenset()
    assert url_secrets("amqp://user:@host/") == frozenset()
    assert url_secrets("amqp://host/") == frozenset()
    assert url_secrets("") == frozenset()


def test_short_secrets_are_hidden_as_whole_words_only() -> None:
    # A two-letter password replaced inside every word would garble the message.
    assert redact("login pw refused; pwned", {"pw"}) == f"login {MASK} refused; pwned"
    assert redact("xhunter22x", {"hunter22"}) == f"x{MASK}x"


def test_the_longer_secret_goes_first() -> None:
    assert redact("s3cret@pw", {"s3cret", "s3cret@pw"}) == MASK


def test_text_without_urls_or_secrets_is_unchanged() -> None:
    text = "cannot connect to amqp://h:5672 vhost=/ within 5s (mail admin@example.com)"
    assert redact(text, {"absent-secret"}) == text
