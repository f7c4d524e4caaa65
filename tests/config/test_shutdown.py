"""The `shutdown` section of gateway.yaml (gateway/config/shutdown.py)."""

from __future__ import annotations

import pytest

from gateway.config.load import parse_config
from gateway.config.shutdown import Shutdown
from gateway.errors import ConfigError

MINIMAL = "listen: 127.0.0.1:0\nupstream: {url: http://127.0.0.1:9}\n"


def test_defaults_fit_a_30_second_stop_budget() -> None:
    shutdown = parse_config(MINIMAL).shutdown
    assert shutdown == Shutdown(drain_delay=5.0, grace=20.0)
    assert shutdown.drain_delay + shutdown.grace < 30


def test_both_durations_are_read() -> None:
    text = MINIMAL + "shutdown: {drain_delay: 1500ms, grace: 2m}\n"
    assert parse_config(text).shutdown == Shutdown(drain_delay=1.5, grace=120.0)


def test_zero_means_at_once() -> None:
    text = MINIMAL + "shutdown: {drain_delay: 0, grace: 0s}\n"
    assert parse_config(text).shutdown == Shutdown(drain_delay=0.0, grace=0.0)


def test_every_problem_is_reported_with_its_path() -> None:
    text = MINIMAL + "shutdown: {drain_delay: 2d, grace: soon, wait: 1s}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert str(caught.value).splitlines() == [
        "gateway.yaml:3: shutdown.wait: unknown key (known here: drain_delay, grace)",
        "gateway.yaml:3: shutdown.drain_delay: must be at most 1h",
        "gateway.yaml:3: shutdown.grace: must be a duration such as 30s, 5m, 12h or 7d "
        "but it's 'soon'",
    ]
