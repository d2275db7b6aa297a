"""Which event loop a server process runs: uvloop's by default when installed, asyncio's on request."""

import asyncio
from collections.abc import Iterator

import pytest

from lipstream.streaming.eventloop import ENV, use_fast_event_loop

uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (it does not support Windows)")


@pytest.fixture(autouse=True)
def default_policy_after() -> Iterator[None]:
    yield
    asyncio.set_event_loop_policy(None)  # the other tests' loops are asyncio's, as before


@pytest.mark.parametrize("setting", [None, "auto", "uvloop", " UVLOOP "])
def test_uvloop_is_the_default_and_its_loop_runs_coroutines(monkeypatch: pytest.MonkeyPatch,
                                                            setting: str | None) -> None:
    if setting is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, setting)
    assert use_fast_event_loop() == "uvloop"
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(asyncio.sleep(0, result=7)) == 7
    finally:
        loop.close()


def test_asyncio_on_request_and_a_wrong_setting_is_a_warning_not_a_failure(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(ENV, "asyncio")
    assert use_fast_event_loop() == "asyncio"
    loop = asyncio.new_event_loop()
    try:
        assert not isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    monkeypatch.setenv(ENV, "tokio")
    assert use_fast_event_loop() == "uvloop"
    assert f"{ENV}=tokio is not one of auto, uvloop, asyncio" in caplog.text
