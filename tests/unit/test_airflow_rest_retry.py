"""The REST client's retries: transient 5xx answers and lost connections, with no server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from streamops.airflow_rest import (
    AirflowRequestError,
    AirflowRest,
    AirflowUnavailableError,
    Retry,
    fetch_token,
    last_error_line,
)

Handler = Callable[[httpx.Request], httpx.Response]


class FakeTime:
    """A clock that moves only when the client sleeps: the tests never wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def retry_for(fake_time: FakeTime, total_seconds: float = 60.0) -> Retry:
    return Retry(total_seconds, sleep=fake_time.sleep, clock=fake_time.clock)


def scripted(answers: list[int | Exception]) -> tuple[Handler, list[httpx.Request]]:
    """A handler that answers each request with the next status (or raises the next error)."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        ok = {"dag_id": "d", "is_paused": False}
        body = {"detail": "Database error"} if answer >= 500 else ok
        return httpx.Response(answer, json=body)

    return handle, seen


def client(handler: Handler, retry: Retry, log_path: Path | None = None) -> AirflowRest:
    return AirflowRest(
        "http://airflow.test",
        "token",
        retry=retry,
        log_path=log_path,
        transport=httpx.MockTransport(handler),
    )


def test_delays_double_up_to_the_cap() -> None:
    delays = Retry(60).delays()
    assert [next(delays) for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_transient_500_is_retried_until_the_api_server_answers(fake_time: FakeTime) -> None:
    handler, seen = scripted([500, 503, 200])
    with client(handler, retry_for(fake_time)) as api:
        api.set_paused("d", False)
    assert len(seen) == 3
    assert all(request.method == "PATCH" for request in seen)
    assert fake_time.sleeps == [0.5, 1.0]


def test_connection_errors_are_retried(fake_time: FakeTime) -> None:
    refused = httpx.ConnectError("Connection refused")
    handler, seen = scripted([refused, refused, 200])
    with client(handler, retry_for(fake_time)) as api:
        assert api.dag("d") == {"dag_id": "d", "is_paused": False}
    assert len(seen) == 3


def test_a_lasting_500_fails_naming_the_api_server_its_status_and_log(
    fake_time: FakeTime, tmp_path: Path
) -> None:
    log = tmp_path / "airflow-api-server.log"
    log.write_text(
        "INFO: started\n"
        "ERROR - sqlalchemy.exc.OperationalError: database is locked\n"
        "INFO: 127.0.0.1 PATCH /api/v2/dags/d 500\n"
    )
    handler, seen = scripted([500])
    with (
        client(handler, retry_for(fake_time, 60), log) as api,
        pytest.raises(AirflowRequestError) as raised,
    ):
        api.set_paused("d", False)
    assert raised.value.status_code == 500
    message = str(raised.value)
    assert "api-server" in message
    assert "PATCH /api/v2/dags/d with 500 Internal Server Error" in message
    assert f"tried {len(seen)} times" in message
    assert str(log) in message
    assert "database is locked" in message
    # Bounded: it gave up once the next pause would pass the 60 s budget.
    assert sum(fake_time.sleeps) <= 60
    assert sum(fake_time.sleeps) + 8 > 60
    assert len(seen) == len(fake_time.sleeps) + 1 > 5


def test_a_lasting_connection_error_names_the_api_server_and_its_log(
    fake_time: FakeTime, tmp_path: Path
) -> None:
    log = tmp_path / "airflow-api-server.log"
    handler, _ = scripted([httpx.ConnectError("Connection refused")])
    with (
        client(handler, retry_for(fake_time, 10), log) as api,
        pytest.raises(AirflowUnavailableError) as raised,
    ):
        api.dag("d")
    message = str(raised.value)
    assert "Airflow does not answer at http://airflow.test" in message
    assert "api-server" in message
    assert str(log) in message


def test_a_post_that_may_have_arrived_is_not_sent_twice(fake_time: FakeTime) -> None:
    # A second trigger after a 500 or a lost answer could start a second supervisor.
    for answer in (500, httpx.ReadTimeout("timed out")):
        handler, seen = scripted([answer, 200])
        with (
            client(handler, retry_for(fake_time)) as api,
            pytest.raises((AirflowRequestError, AirflowUnavailableError)),
        ):
            api.trigger("d")
        assert len(seen) == 1, answer


def test_a_post_that_never_left_is_retried(fake_time: FakeTime) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ConnectError("Connection refused")
        return httpx.Response(200, json={"dag_run_id": "manual__1"})

    seen: list[httpx.Request] = []
    with client(handle, retry_for(fake_time)) as api:
        assert api.trigger("d") == "manual__1"
    assert len(seen) == 2


def test_client_errors_are_not_retried(fake_time: FakeTime) -> None:
    handler, seen = scripted([404])
    with client(handler, retry_for(fake_time)) as api:
        assert api.dag("d") is None
    assert len(seen) == 1


def test_without_retry_a_500_fails_at_once(fake_time: FakeTime) -> None:
    # The plugin's page builds its client without retry: it answers its caller at once.
    handler, seen = scripted([500, 200])
    with client(handler, Retry(sleep=fake_time.sleep)) as api, pytest.raises(AirflowRequestError):
        api.set_paused("d", False)
    assert len(seen) == 1
    assert fake_time.sleeps == []


def test_the_login_is_retried_too(fake_time: FakeTime) -> None:
    answers = iter([503, 200])

    def handle(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        return httpx.Response(status, json={"access_token": "jwt"} if status == 200 else {})

    token = fetch_token(
        "http://airflow.test",
        "admin",
        "admin",
        retry=retry_for(fake_time),
        transport=httpx.MockTransport(handle),
    )
    assert token == "jwt"
    assert fake_time.sleeps == [0.5]


def test_last_error_line_quotes_the_newest_error(tmp_path: Path) -> None:
    log = tmp_path / "api.log"
    assert last_error_line(log) is None
    log.write_text("INFO a\nERROR first\nTraceback (most recent call last):\nINFO b\n")
    assert last_error_line(log) == "Traceback (most recent call last):"
    log.write_text("INFO a\nINFO b\n")
    assert last_error_line(log) is None
