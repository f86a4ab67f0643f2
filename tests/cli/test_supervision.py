"""The pure parts of ``run --processes``: backoff, exit statuses, option types, the child spec."""

from __future__ import annotations

import signal

import click
import pytest

from amqp_worker.cli.supervision import (
    RESTART_MAX_S,
    ChildSpec,
    MemorySize,
    ProcessCount,
    cpu_count,
    describe_exit,
    read_status,
    restart_delay_s,
    status_line,
)


def test_restart_backoff_doubles_from_half_a_second_up_to_its_cap() -> None:
    assert [restart_delay_s(n) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert restart_delay_s(8) == RESTART_MAX_S
    assert restart_delay_s(10_000) == RESTART_MAX_S


def test_exit_statuses_read_as_words() -> None:
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(4) == "exit code 4"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-200) == "killed by signal 200"


def test_process_count_takes_a_number_or_auto() -> None:
    count = ProcessCount()
    assert count.convert("3", None, None) == 3
    assert count.convert(" AUTO ", None, None) == cpu_count() >= 1
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(click.BadParameter):
            count.convert(bad, None, None)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512", 512 * 2**20),
        ("512MiB", 512 * 2**20),
        ("1.5GiB", int(1.5 * 2**30)),
        ("800MB", 800 * 1000**2),
        ("2g", 2 * 2**30),
        (" 64 mib ", 64 * 2**20),
    ],
)
def test_memory_sizes_are_bytes_and_a_bare_number_is_mib(text: str, size: int) -> None:
    assert MemorySize().convert(text, None, None) == size


@pytest.mark.parametrize("text", ["", "MiB", "12XB", "-5MiB", "1e9", "512KiB"])
def test_memory_sizes_that_are_not_refused(text: str) -> None:
    with pytest.raises(click.BadParameter):
        MemorySize().convert(text, None, None)


def test_a_child_spec_survives_the_environment() -> None:
    spec = ChildSpec(
        target="app:worker",
        index=1,
        status_fd=7,
        shutdown_timeout_s=2.5,
        log_level="INFO",
        log_format="json",
        overrides={"queues": ["a", "b"], "max_concurrency": 3},
        metrics=True,
        max_jobs=100,
        max_memory_bytes=2**30,
    )
    assert ChildSpec.from_env(spec.to_env()) == spec
    for bad in ("", "[]", '{"target": "x"}', '{"nope": 1}'):
        with pytest.raises(ValueError, match="does not hold a child spec"):
            ChildSpec.from_env(bad)


def test_status_lines_round_trip_and_anything_else_is_ignored() -> None:
    line = status_line("beat", healthy=True, jobs=3)
    assert line.endswith(b"\n")
    assert read_status(line) == {"event": "beat", "healthy": True, "jobs": 3}
    for junk in (b"", b"nonsense\n", b"[1]\n", b'{"event": 1}\n', b"\xff\xfe\n"):
        assert read_status(junk) is None
