"""The access log (gateway/web/accesslog.py): lines written together off the request path, in
the format of the other log lines (text or JSON), none lost at a graceful stop, none when the
log level leaves INFO out. Real gateway, real upstream, standard error as the process has it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from pathlib import Path

import aiohttp
import pytest

from gateway.config.load import parse_config
from gateway.web import accesslog
from gateway.web.accesslog import FLUSH_EVERY, MAX_WAITING, AccessLog
from gateway.web.app import build_app
from gateway.web.keys import ACCESS_LOG
from tests.conftest import Served, serve

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO gateway\.access: [0-9a-f]{16} 127\.0\.0\.1 "
    r"GET /page/(?P<n>\d+) 200 \d+\.\dms user=- decision=forward$"
)


async def _gateway(upstream: Served, tmp_path: Path, logging_yaml: str) -> Served:
    config = parse_config(
        "listen: 127.0.0.1:0\n"
        f"upstream: {{url: {upstream.url}}}\n"
        f"state: {{durable: {{type: sqlite, path: {tmp_path}/gateway.db}}}}\n"
        f"logging: {logging_yaml}\n",
        "test gateway.yaml",
    )
    return await serve(build_app(config))


async def _get(gw: Served, paths: range) -> None:
    async with aiohttp.ClientSession() as http:
        for n in paths:
            async with http.get(f"{gw.url}/page/{n}?token=secret-{n}") as r:
                assert r.status == 200


@pytest.fixture
def info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")  # logging.level: info


@pytest.mark.usefixtures("info")
async def test_lines_wait_off_the_request_path_and_a_graceful_stop_writes_them_all(
    upstream: Served,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(accesslog, "FLUSH_EVERY", 3600.0)  # only the stop writes, here
    gw = await _gateway(upstream, tmp_path, "{access_log: true}")
    capsys.readouterr()
    await _get(gw, range(3))
    assert capsys.readouterr().err == ""  # nothing written while the requests ran…
    await _get(gw, range(3, 7))
    await gw.runner.cleanup()  # …and everything at the stop, in order, once
    written = capsys.readouterr().err.splitlines()
    found = [LINE.match(line) for line in written]
    assert all(found), written
    assert [int(m["n"]) for m in found if m] == list(range(7))
    assert "secret" not in "\n".join(written)  # never the query (API tokens ride in it)


@pytest.mark.usefixtures("info")
async def test_the_writer_writes_every_fifth_of_a_second(
    upstream: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = await _gateway(upstream, tmp_path, "{access_log: true}")
    try:
        capsys.readouterr()
        await _get(gw, range(2))
        for _ in range(50):
            if capsys.readouterr().err.count("gateway.access") == 2:
                break
            await asyncio.sleep(FLUSH_EVERY / 4)
        else:
            raise AssertionError("the waiting lines were not written")
    finally:
        await gw.runner.cleanup()


@pytest.mark.usefixtures("info")
async def test_json_lines_have_the_other_json_log_lines_keys(
    upstream: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = await _gateway(upstream, tmp_path, "{access_log: true, format: json}")
    capsys.readouterr()
    await _get(gw, range(1))
    await gw.runner.cleanup()
    [line] = capsys.readouterr().err.splitlines()
    entry = json.loads(line)
    assert list(entry) == ["time", "level", "logger", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", entry["time"])
    assert (entry["level"], entry["logger"]) == ("info", "gateway.access")
    assert re.fullmatch(r"[0-9a-f]{16} 127\.0\.0\.1 GET /page/0 200 .*", entry["message"])


async def test_no_lines_when_the_log_level_leaves_info_out(
    upstream: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logging.getLogger("gateway.access").setLevel(logging.WARNING)  # logging.level: warning
    try:
        gw = await _gateway(upstream, tmp_path, "{access_log: true}")
        await _get(gw, range(2))
        await gw.runner.cleanup()
        assert "gateway.access" not in capsys.readouterr().err
    finally:
        logging.getLogger("gateway.access").setLevel(logging.NOTSET)


@pytest.mark.usefixtures("info")
async def test_no_access_log_at_all_when_it_is_off(upstream: Served, tmp_path: Path) -> None:
    gw = await _gateway(upstream, tmp_path, "{access_log: false}")
    try:
        assert ACCESS_LOG not in gw.app
        await _get(gw, range(1))
    finally:
        await gw.runner.cleanup()


def test_a_burst_is_written_at_once_and_a_closed_stream_loses_lines_without_raising() -> None:
    class Clock:
        def now(self) -> float:
            return 1_800_000_000.25

        def monotonic(self) -> float:
            return 0.0

    class Closed:
        def write(self, text: str) -> int:
            raise BrokenPipeError

        def flush(self) -> None:
            pass

    out = io.StringIO()
    access = AccessLog(Clock(), stream=out)
    for n in range(MAX_WAITING - 1):
        access.record("r", "ip", "GET", f"/{n}", 200, 0.001, "-", "forward")
    assert out.getvalue() == ""
    access.record("r", "ip", "GET", "/last", 200, 0.001, "-", "forward")
    assert out.getvalue().count("\n") == MAX_WAITING  # the burst, in one write
    assert (
        ",250 INFO gateway.access: r ip GET /0 200 1.0ms user=- decision=forward" in out.getvalue()
    )
    gone = AccessLog(Clock(), stream=Closed())  # type: ignore[arg-type]
    gone.record("r", "ip", "GET", "/", 200, 0.0, "-", "forward")
    gone.flush()
    assert gone.lost == 1
