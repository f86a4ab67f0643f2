"""The dashboard's pure parts: search and paging, the chart's history, CSRF, basic auth, settings."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from amqp_worker import Job
from amqp_worker._core.failures import AttemptRecord, FailedJob, FailureReason
from amqp_worker.dashboard import DashboardSettings
from amqp_worker.dashboard.auth import basic_credentials
from amqp_worker.dashboard.csrf import CsrfToken
from amqp_worker.dashboard.filters import ago, num, when
from amqp_worker.dashboard.history import History
from amqp_worker.dashboard.search import FailedQuery, page_of, search_text
from amqp_worker.dashboard.settings import is_loopback


def record(
    handler: str = "send_email",
    error: str = "SMTP said no",
    queue: str = "emails",
    args: dict[str, object] | None = None,
    reason: FailureReason = FailureReason.HANDLER_ERROR,
) -> FailedJob:
    job = Job(queue=queue, handler=handler, args=args or {"to": "ada@example.com"})
    history = [
        AttemptRecord(
            attempt=1, error_type="TimeoutError", error_message="first try", at=datetime.now(UTC)
        )
    ]
    return FailedJob(
        id=job.id,
        queue=queue,
        reason=reason,
        failed_at=datetime.now(UTC),
        attempts=2,
        history=history,
        job=job,
        body=job.model_dump_json().encode(),
        error_type="builtins.RuntimeError",
        error_message=error,
        traceback="Traceback (most recent call last):\n  ...\nRuntimeError: " + error,
    )


class TestFailedQuery:
    def test_an_empty_query_matches_everything_and_says_so(self) -> None:
        query = FailedQuery()
        assert not query
        assert query.matches(record())
        assert query.describe() == "all failed jobs"
        assert query.params() == {}

    def test_fields_match_exactly_and_all_must_match(self) -> None:
        one = record(handler="send_email", queue="emails")
        assert FailedQuery(handler="send_email").matches(one)
        assert not FailedQuery(handler="send").matches(one)
        assert FailedQuery(queue="emails", handler="send_email").matches(one)
        assert not FailedQuery(queue="reports", handler="send_email").matches(one)
        assert FailedQuery(id=one.id).matches(one)
        assert FailedQuery(reason="handler_error").matches(one)
        assert not FailedQuery(reason="crashed").matches(one)

    @pytest.mark.parametrize(
        "text", ["smtp SAID", "TimeoutError", "first try", "ada@example", "most recent call"]
    )
    def test_text_is_a_case_insensitive_substring_of_errors_traceback_or_args(
        self, text: str
    ) -> None:
        assert FailedQuery(text=text).matches(record())

    def test_text_finds_words_in_a_body_that_is_not_a_job(self) -> None:
        bad = record().model_copy(update={"job": None, "body": b"\xffnot json quokka"})
        assert "quokka" in search_text(bad)
        assert FailedQuery(text="quokka").matches(bad)

    def test_from_params_ignores_unknown_keys_strips_and_bounds_values(self) -> None:
        query = FailedQuery.from_params({"handler": "  x ", "csrf": "t", "text": "a" * 900})
        assert query.handler == "x"
        assert len(query.text) == 500
        assert query.describe().startswith("handler=x, text='aaa")
        assert "csrf" not in query.urlencoded()


class TestPages:
    def test_pages_count_and_clamp(self) -> None:
        records = [record() for _ in range(7)]
        page = page_of(records, 2, 3, len(records))
        assert [r.id for r in page.items] == [r.id for r in records[3:6]]
        assert (page.pages, page.has_next, page.first_index) == (3, True, 4)
        last = page_of(records, 3, 3, 7)
        assert (len(last.items), last.has_next) == (1, False)
        assert page_of(records, 0, 3, 7).number == 1
        assert page_of([], 1, 3, 0).first_index == 0

    def test_an_unknown_total_has_a_next_page_when_this_one_is_full(self) -> None:
        assert page_of([record(), record()], 1, 2, None).has_next
        assert not page_of([record()], 1, 2, None).has_next
        assert page_of([], 1, 2, None).pages is None


def test_history_keeps_evenly_spaced_samples_of_the_last_minutes() -> None:
    history = History(window_s=10, every_s=2)
    assert history.add(100.0, {"ready": 1})
    assert not history.add(100.5, {"ready": 2})  # a second open page polled
    for i in range(1, 20):
        history.add(100.0 + 2 * i, {"ready": float(i)})
    series = history.series()["ready"]
    assert len(series) == 6
    assert series[-1] == (138.0, 19.0)


def test_csrf_token_accepts_only_itself() -> None:
    token = CsrfToken()
    assert token.check(token.value)
    assert not token.check(token.value + "x")
    assert not token.check("")
    assert not token.check(None)
    assert not token.check(["list"])
    assert CsrfToken().value != token.value
    assert token.value not in repr(token)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Basic " + base64.b64encode(b"ada:s3cr:et").decode(), ("ada", "s3cr:et")),
        ("basic " + base64.b64encode("zoë:pw".encode()).decode(), ("zoë", "pw")),
        ("Basic " + base64.b64encode(b"nocolon").decode(), None),
        ("Basic !!!", None),
        ("Bearer abc", None),
        ("", None),
        (None, None),
    ],
)
def test_basic_credentials(header: str | None, expected: tuple[str, str] | None) -> None:
    assert basic_credentials(header) == expected


class TestDashboardSettings:
    def test_defaults_bind_loopback_without_auth(self) -> None:
        settings = DashboardSettings()
        assert (settings.host, settings.port, settings.credentials) == ("127.0.0.1", 8181, None)

    @pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com", "::"])
    def test_binding_beyond_loopback_needs_auth(self, host: str) -> None:
        with pytest.raises(ValidationError, match="set auth"):
            DashboardSettings(host=host)
        assert DashboardSettings(host=host, auth="ops:pw").credentials == ("ops", "pw")

    @pytest.mark.parametrize("auth", ["nopassword", ":pw", "user:", ""])
    def test_auth_must_be_user_colon_password_and_is_never_echoed(self, auth: str) -> None:
        with pytest.raises(ValidationError) as info:
            DashboardSettings(auth=auth + "Zq9secret" if auth == "nopassword" else auth)
        assert "Zq9secret" not in str(info.value)

    def test_secrets_stay_out_of_the_repr(self) -> None:
        settings = DashboardSettings(
            auth="ops:hunter2", management_url="http://admin:mgmtpw@127.0.0.1:15672/"
        )
        assert "hunter2" not in repr(settings)
        assert "mgmtpw" not in repr(settings)

    def test_env_vars(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AMQP_WORKER_DASHBOARD_READ_ONLY", "1")
        monkeypatch.setenv("AMQP_WORKER_DASHBOARD_PORT", "9000")
        settings = DashboardSettings()
        assert settings.read_only
        assert settings.port == 9000

    def test_management_url_must_be_http(self) -> None:
        with pytest.raises(ValidationError, match="http"):
            DashboardSettings(management_url="amqp://x/")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.1", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_filters_read_numbers_and_times() -> None:
    assert (num(None), num(12345), num(0), num("x")) == ("—", "12,345", "0", "x")
    moment = datetime(2026, 12, 2, 4, 5, 6, tzinfo=UTC)
    assert when(moment) == "2026-12-02 04:05:06 UTC"
    assert when(None) == ago(None) == "—"
    cases = {
        timedelta(seconds=-30): "30 s ago",
        timedelta(seconds=89): "in 89 s",
        timedelta(minutes=75): "in 75 min",
        timedelta(minutes=-59, seconds=-59.9): "60 min ago",
        timedelta(hours=2): "in 2 h",
        timedelta(days=3): "in 3 d",
    }
    for offset, text in cases.items():
        assert ago(moment + offset, now=moment) == text, offset
