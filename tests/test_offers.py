"""SDP offers: the checks of offer.py, and a fuzzer that POSTs hundreds of mutated real offers to a
running server. Every answer must be 201 or a 4xx JSON reason, nothing may log an error, and the
server must return to idle and still serve a valid session."""

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable

import aiohttp
import pytest

from lipstream.engine.avatar import Avatar
from lipstream.streaming.offer import OfferError, check_session_offer, check_viewer_offer
from lipstream.streaming.server import ServeConfig
from tests.serving import SDP, SILENCE, RunningServer, client_offer, publish, serving, still_streaming

SEED = 20261206  # failures reproduce: the case number and this seed give the same offer
SESSION_CASES = 500
VIEWER_CASES = 150
CONFIG = ServeConfig(max_sessions=2, loopback_ice=False)
CRLF = "\r\n"


pytestmark = pytest.mark.usefixtures("loopback")


def edit(sdp: str, old: str, new: str) -> str:
    assert old in sdp, old
    return sdp.replace(old, new, 1)


def line_starting(sdp: str, prefix: str) -> str:
    return next(line for line in sdp.split(CRLF) if line.startswith(prefix))


def m_line(sdp: str, kind: str) -> str:
    return line_starting(sdp, f"m={kind} ")


async def test_real_offers_pass_and_broken_ones_get_a_reason_to_act_on() -> None:
    session, viewer = await client_offer("sendrecv", "recvonly"), await client_offer("recvonly", "recvonly")
    check_session_offer(session)
    check_viewer_offer(viewer)
    check_viewer_offer(await client_offer(None, "recvonly"))  # a viewer may watch without sound
    fingerprints = "\r\n".join(line for line in session.split(CRLF) if not line.startswith("a=fingerprint"))
    refused: list[tuple[Callable[[str], object], str, str]] = [
        (check_session_offer, edit(session, "a=sendrecv", "a=recvonly"),
         "the offer's audio is recvonly: add the microphone track with direction sendrecv"),
        (check_session_offer, await client_offer(None, "recvonly"), "0 audio m-lines"),
        (check_session_offer, await client_offer("sendrecv", "sendonly"), "video is sendonly"),
        (check_session_offer, fingerprints, "no DTLS fingerprint"),
        (check_session_offer, edit(session, "a=group:BUNDLE 0 1", "a=group:BUNDLE 0"), "BUNDLE"),
        (check_session_offer, edit(session, "a=mid:1", "a=mid:0"), "share a mid"),
        (check_session_offer, edit(session, line_starting(session, "a=ice-pwd"), ""), "ice-pwd"),
        (check_session_offer, edit(session, "a=setup:actpass", "a=setup:x"), "a=setup"),
        (check_session_offer, edit(session, "opus/48000/2", "speex/48000"), "OPUS"),
        (check_session_offer, edit(session, "UDP/TLS/RTP/SAVPF 96", "RTP/AVP 96"), "RTP/AVP"),
        (check_session_offer, "hello", "starts with the line 'v=0'"),
        # once 201, then a session whose senders crashed on every packet (aiortc asserts < 256 bytes)
        (check_session_offer, edit(session, "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
                                   "a=extmap:300 urn:ietf:params:rtp-hdrext:sdes:mid"), "a=extmap id '300'"),
        (check_session_offer, session.replace("a=mid:0", "a=mid:" + "m" * 256).replace(
            "a=group:BUNDLE 0 1", "a=group:BUNDLE " + "m" * 256 + " 1"), "longer than 255 bytes"),
        # digits that str.isdigit() takes and int() refuses ('²') or reads ('١'): once a 500
        (check_session_offer, edit(session, " 96 9 0 8", " 96 \u00b2 9 0 8"), "payload type '\u00b2'"),
        (check_session_offer, edit(session, " 96 9 0 8", " 96 \u0661 9 0 8"), "payload type '\u0661'"),
        (check_session_offer, edit(session, m_line(session, "audio"), "m=audio \u00b2 UDP/TLS/RTP/SAVPF 96"),
         "is not 'm=<media> <port>"),
        (check_viewer_offer, session, "the viewer's audio is sendrecv"),
        (check_viewer_offer, await client_offer(None, "sendrecv"), "viewer's video is sendrecv"),
    ]
    for check, sdp, reason in refused:
        with pytest.raises(OfferError, match=".") as error:
            check(sdp)
        assert reason in str(error.value), (reason, str(error.value))


class Mutator:
    """Seeded mutations of a valid offer: one to three of them per case."""

    def __init__(self, base: str, rng: random.Random) -> None:
        self.base, self.rng = base, rng
        self.operators = [self.delete_line, self.duplicate_line, self.swap_lines, self.truncate,
                          self.random_bytes, self.mid, self.bundle, self.fingerprint, self.direction,
                          self.codec, self.payload_types, self.m_lines, self.ice, self.setup, self.newlines]

    def case(self) -> str:
        sdp = self.base
        for _ in range(self.rng.randint(1, 3)):
            sdp = self.rng.choice(self.operators)(sdp)
        return sdp

    def _lines(self, sdp: str) -> list[str]:
        return sdp.split(CRLF)

    def _pick(self, lines: list[str], prefix: str = "") -> int:
        choices = [i for i, line in enumerate(lines) if line.startswith(prefix)] or [0]
        return self.rng.choice(choices)

    def _token(self) -> str:
        alphabet = "abc019+/=:; -\t\x00é"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, 12)))

    def delete_line(self, sdp: str) -> str:
        lines = self._lines(sdp)
        del lines[self._pick(lines)]
        return CRLF.join(lines)

    def duplicate_line(self, sdp: str) -> str:
        lines = self._lines(sdp)
        i = self._pick(lines)
        return CRLF.join(lines[: i + 1] + [lines[i]] + lines[i + 1:])

    def swap_lines(self, sdp: str) -> str:
        lines = self._lines(sdp)
        i, j = self._pick(lines), self._pick(lines)
        lines[i], lines[j] = lines[j], lines[i]
        return CRLF.join(lines)

    def truncate(self, sdp: str) -> str:
        return sdp[: self.rng.randint(0, len(sdp))]

    def random_bytes(self, sdp: str) -> str:
        at = self.rng.randint(0, len(sdp))
        noise = bytes(self.rng.randint(0, 255) for _ in range(self.rng.randint(1, 20)))
        # surrogateescape: bytes that are not UTF-8 reach the server as they are
        return sdp[:at] + noise.decode("utf-8", "surrogateescape") + sdp[at:]

    def _replace_value(self, sdp: str, prefix: str, values: list[str]) -> str:
        lines = self._lines(sdp)
        i = self._pick(lines, prefix)
        lines[i] = prefix + self.rng.choice([*values, self._token()])
        return CRLF.join(lines)

    def mid(self, sdp: str) -> str:
        return self._replace_value(sdp, "a=mid:", ["0", "1", "2", "audio", ""])

    def bundle(self, sdp: str) -> str:
        return self._replace_value(sdp, "a=group:", ["BUNDLE 0", "BUNDLE 1 0", "BUNDLE 0 1 1", "BUNDLE",
                                                     "LS 0 1", "BUNDLE 0 1 2"])

    def fingerprint(self, sdp: str) -> str:
        return self._replace_value(sdp, "a=fingerprint:", ["sha-256 00", "md5 00:11", "sha-256", "",
                                                           "sha-1 " + ":".join(["AB"] * 20)])

    def direction(self, sdp: str) -> str:
        lines = self._lines(sdp)
        i = self._pick(lines, "a=" + self.rng.choice(["sendrecv", "recvonly", "sendonly"]))
        lines[i] = "a=" + self.rng.choice(["sendrecv", "sendonly", "recvonly", "inactive", "sendrecv2"])
        return CRLF.join(lines)

    def codec(self, sdp: str) -> str:
        lines = self._lines(sdp)
        i = self._pick(lines, "a=rtpmap:")
        pt = lines[i].split(" ")[0]
        lines[i] = f"{pt} " + self.rng.choice(["opus/48000/2", "VP8/90000", "H264/90000", "rtx/90000",
                                               "G722/8000", "opus", "", self._token()])
        return CRLF.join(lines)

    def payload_types(self, sdp: str) -> str:
        lines = self._lines(sdp)
        i = self._pick(lines, "m=")
        head = lines[i].split(" ")[:3]
        pts = [self.rng.choice(["96", "97", "0", "127", "128", "-1", "x", "35", "200"])
               for _ in range(self.rng.randint(0, 4))]
        lines[i] = " ".join(head + pts)
        return CRLF.join(lines)

    def m_lines(self, sdp: str) -> str:
        sections = sdp.split("\r\nm=")
        if len(sections) < 2:
            return sdp + "\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96"
        i = self.rng.randrange(1, len(sections))
        choice = self.rng.randrange(3)
        if choice == 0:
            del sections[i]
        elif choice == 1:
            sections.insert(i, sections[i])
        else:
            sections.insert(i, self.rng.choice(["text 9 RTP/AVP 0", "application 9 UDP/DTLS/SCTP "
                                                "webrtc-datachannel\r\na=mid:2", "video 0 x"]))
        return "\r\nm=".join(sections)

    def ice(self, sdp: str) -> str:
        prefix = self.rng.choice(["a=ice-ufrag:", "a=ice-pwd:"])
        return self._replace_value(sdp, prefix, ["ab", "a" * 300, "abcd", "a" * 22, "ab cd"])

    def setup(self, sdp: str) -> str:
        return self._replace_value(sdp, "a=setup:", ["actpass", "active", "passive", "holdconn", ""])

    def newlines(self, sdp: str) -> str:
        return sdp.replace(CRLF, self.rng.choice(["\n", "\r", "\r\n\r\n", " "]))


async def post_case(http: aiohttp.ClientSession, url: str, offer: str) -> tuple[int, str | None]:
    """POST one offer -> (status, Location if created); a non-201 must be a JSON reason."""
    async with http.post(url, data=offer.encode("utf-8", "surrogateescape"), headers=SDP) as response:
        if response.status == 201:
            return 201, response.headers["Location"]
        assert response.content_type == "application/json", (response.status, await response.text())
        reason = (await response.json())["error"]
        assert reason.strip() and "NoneType" not in reason and "Traceback" not in reason, reason
        return response.status, None


async def fuzz(server: RunningServer, http: aiohttp.ClientSession, base: str, path: str,
               cases: int, rng: random.Random) -> Counter[int]:
    mutator, statuses = Mutator(base, rng), Counter[int]()
    for number in range(cases):
        offer = mutator.case()
        status, location = await post_case(http, server.url + path, offer)
        assert status == 201 or 400 <= status < 500, f"case {number} (seed {SEED}): {status}\n{offer}"
        statuses[status] += 1
        if location is not None:  # a mutation that still makes a valid offer: end it at once
            async with http.delete(server.url + location) as response:
                assert response.status == 204
    return statuses


async def idle(server: RunningServer, http: aiohttp.ClientSession, sessions: int) -> dict[str, int]:
    """/healthz once every session being closed has gone (closing is asynchronous)."""
    for _ in range(50):
        async with http.get(f"{server.url}/healthz") as response:
            health: dict[str, int] = await response.json()
        if health["sessions"] == sessions:
            break
        await asyncio.sleep(0.1)
    return health


async def test_fuzzed_offers_get_201_or_a_4xx_reason_and_leak_nothing(
        avatar: Avatar, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    rng = random.Random(SEED)
    session_base = await client_offer("sendrecv", "recvonly")
    viewer_base = await client_offer("recvonly", "recvonly")
    async with serving(CONFIG, avatar) as (server, http):
        sessions = await fuzz(server, http, session_base, "/v1/sessions", SESSION_CASES, rng)
        assert await idle(server, http, 0) == {"status": "ok", "sessions": 0, "max_sessions": 2, "viewers": 0}
        live = await publish(server, http, SILENCE)
        viewers = await fuzz(server, http, viewer_base, f"{live.location}/viewers", VIEWER_CASES, rng)
        assert (await idle(server, http, 1))["viewers"] == 0
        assert await still_streaming(live), "the live session stalled under fuzzed viewer offers"
        await live.stop(http)
        assert (await idle(server, http, 0))["sessions"] == 0
        after = await publish(server, http, SILENCE)  # a valid session still works
        assert await still_streaming(after)
        await after.stop(http)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    print(f"fuzzed {SESSION_CASES} session offers {dict(sessions)}, {VIEWER_CASES} viewer offers "
          f"{dict(viewers)}; 0 leaked slots, {len(errors)} errors logged")
    assert not errors, [r.getMessage() for r in errors[:5]]
