"""SDP offers checked before any work is spent on them, and the one edit made to our answers.

aiortc accepts offers it cannot serve (no DTLS fingerprint: the session waits out its connect
timeout; audio recvonly: a session with no voice) and raises bare internals on others. So the offer
is parsed here, small and strict, against what lipstream needs, and refused with a reason a
developer can act on. A session (WHIP's shape) needs one audio m-line that sends and one video
m-line to receive on; a viewer (WHEP's shape) receives only. Either needs every m-line's mid in one
BUNDLE group, a DTLS fingerprint, ICE credentials, and remote candidates the server may send
STUN checks to (candidates.py).
"""

import re
from dataclasses import dataclass

from lipstream.streaming.candidates import candidate_problem

SENDING = ("sendrecv", "sendonly")
RECEIVING = ("sendrecv", "recvonly")
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
MEDIA_PROTOCOLS = ("UDP/TLS/RTP/SAVPF", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "RTP/SAVP")
DATA_PROTOCOLS = ("UDP/DTLS/SCTP", "DTLS/SCTP", "TCP/DTLS/SCTP")
CODECS = {"audio": ("opus",), "video": ("vp8", "h264")}  # what aiortc decodes / we encode
DIGEST_BYTES = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}
LINE = re.compile(r"[a-z]=")
ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")
# ASCII digits only: str.isdigit() also takes '²' and '١', which int() refuses or reads as a number
PORT = re.compile(r"[0-9]{1,5}")
PAYLOAD_TYPE = re.compile(r"[0-9]{1,3}")
ICE_UFRAG_CHARS = (4, 256)  # RFC 8839 section 5.4
ICE_PWD_CHARS = (22, 256)
# What an RTP header extension can carry (RFC 8285, two-byte form); aiortc's senders crash past it
EXTMAP_IDS = (1, 255)
MID_MAX_BYTES = 255
# In our answer, ask for Opus DTX (a caller who is quiet sends a packet every 400 ms, not 50 a
# second: the inbox hears silence, the transport keeps the session alive) and in-band FEC.
OPUS_ANSWER_FMTP = {"usedtx": "1", "useinbandfec": "1"}
OPUS_RTPMAP = re.compile(r"a=rtpmap:(\d+) opus/", re.IGNORECASE)
FMTP = re.compile(r"a=fmtp:(\d+) ?(.*)")


class OfferError(ValueError):
    """The offer cannot be served; the message says what to change."""


@dataclass(frozen=True)
class Section:
    """One m-line and its attributes (name -> values, in order)."""

    kind: str
    protocol: str
    formats: tuple[str, ...]
    attributes: dict[str, list[str]]

    def values(self, name: str) -> list[str]:
        return self.attributes.get(name, [])

    @property
    def mid(self) -> str | None:
        mids = self.values("mid")
        return mids[0] if mids else None

    @property
    def direction(self) -> str:
        found = [d for d in DIRECTIONS if d in self.attributes]
        if len(found) != 1:  # aiortc fails on none; two contradict
            raise OfferError(f"the offer's {self.kind} has {len(found)} directions ({', '.join(found)}): "
                             "give each m-line one of a=sendrecv, a=sendonly, a=recvonly, a=inactive")
        return found[0]


@dataclass(frozen=True)
class Offer:
    session: dict[str, list[str]]  # session-level attributes
    sections: tuple[Section, ...]

    def of_kind(self, kind: str) -> list[Section]:
        return [s for s in self.sections if s.kind == kind]


def check_session_offer(sdp: str) -> Offer:
    """A publisher's offer: one audio m-line that sends, one video m-line to receive on."""
    offer = parse_offer(sdp)
    audio, video = _one(offer, "audio", "add the microphone track"), \
        _one(offer, "video", "add a video transceiver with direction recvonly")
    if audio.direction not in SENDING:
        raise OfferError(f"the offer's audio is {audio.direction}: add the microphone track with "
                         "direction sendrecv (or sendonly)")
    if video.direction not in RECEIVING:
        raise OfferError(f"the offer's video is {video.direction}: offer it recvonly (or sendrecv) "
                         "to receive the avatar")
    _check_transport(offer)
    return offer


def check_viewer_offer(sdp: str) -> Offer:
    """A viewer's offer: one video m-line recvonly, audio optional and recvonly too."""
    offer = parse_offer(sdp)
    video = _one(offer, "video", "add a video transceiver with direction recvonly")
    if video.direction != "recvonly":
        raise OfferError(f"the viewer's video is {video.direction}: a viewer only watches, offer "
                         "video recvonly")
    audio = offer.of_kind("audio")
    if len(audio) > 1:
        raise OfferError(f"the offer has {len(audio)} audio m-lines: a viewer receives one, offer one "
                         "recvonly audio transceiver")
    if audio and audio[0].direction != "recvonly":
        raise OfferError(f"the viewer's audio is {audio[0].direction}: a viewer only listens, offer "
                         "audio recvonly")
    _check_transport(offer)
    return offer


def parse_offer(sdp: str) -> Offer:
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    if not lines or lines[0] != "v=0":
        raise OfferError("malformed SDP: an offer starts with the line 'v=0'")
    for number, line in enumerate(lines, 1):
        if not LINE.match(line):
            raise OfferError(f"malformed SDP: line {number} is not 'x=value' ({line[:40]!r})")
    blocks = _split_media(lines)
    return Offer(_attributes(blocks[0]), tuple(_section(b) for b in blocks[1:]))


def _split_media(lines: list[str]) -> list[list[str]]:
    """[session lines, m-line block, m-line block, ...]."""
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line.startswith("m="):
            blocks.append([])
        blocks[-1].append(line)
    return blocks


def _attributes(lines: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in lines:
        if line.startswith("a="):
            name, _, value = line[2:].partition(":")
            found.setdefault(name, []).append(value)
    return found


def _section(lines: list[str]) -> Section:
    fields = lines[0][2:].split()
    if len(fields) < 4 or not PORT.fullmatch(fields[1]):
        raise OfferError(f"malformed SDP: {lines[0][:60]!r} is not 'm=<media> <port> <proto> <formats>'")
    kind, protocol, formats = fields[0], fields[2], tuple(fields[3:])
    if kind not in ("audio", "video", "application"):
        raise OfferError(f"the offer has an m={kind} section: lipstream takes audio and video only")
    section = Section(kind, protocol, formats, _attributes(lines[1:]))
    _check_protocol(section)
    if kind != "application":
        _check_codecs(section)
        _check_extmap_ids(section)
        if "rtcp-mux" not in section.attributes:  # aiortc sends RTCP on the RTP port only
            raise OfferError(f"the offer's {kind} has no a=rtcp-mux: WebRTC multiplexes RTCP, add it")
    return section


def _check_protocol(section: Section) -> None:
    allowed = DATA_PROTOCOLS if section.kind == "application" else MEDIA_PROTOCOLS
    if section.protocol not in allowed:
        raise OfferError(f"the offer's {section.kind} uses {section.protocol}: a WebRTC SDP offer uses "
                         f"{allowed[0]} (DTLS-SRTP)")


def _check_codecs(section: Section) -> None:
    """Every payload type a number with its rtpmap, and one codec lipstream uses among them."""
    names: dict[str, str] = {}
    for value in section.values("rtpmap"):
        pt, _, encoding = value.partition(" ")
        names[pt] = encoding.split("/")[0].lower()
    for pt in section.formats:
        if not PAYLOAD_TYPE.fullmatch(pt) or int(pt) > 127:
            raise OfferError(f"the offer's {section.kind} has payload type {pt[:10]!r}: use 0-127")
        if int(pt) >= 96 and pt not in names:
            raise OfferError(f"the offer's {section.kind} payload type {pt} has no a=rtpmap line")
    wanted = CODECS[section.kind]
    if not any(names.get(pt) in wanted for pt in section.formats):
        raise OfferError(f"the offer's {section.kind} has no codec lipstream uses: offer "
                         f"{' or '.join(c.upper() for c in wanted)}")


def _check_extmap_ids(section: Section) -> None:
    """Header extension ids an RTP packet can carry: aiortc answers with larger ones, then crashes."""
    low, high = EXTMAP_IDS
    for value in section.values("extmap"):
        ext_id = value.split(" ", 1)[0].split("/", 1)[0]  # "3/sendrecv urn:..." -> "3"
        if not (PAYLOAD_TYPE.fullmatch(ext_id) and low <= int(ext_id) <= high):
            raise OfferError(f"the offer's {section.kind} has a=extmap id {ext_id[:10]!r}: RTP header "
                             f"extensions are numbered {low}-{high}")


def _one(offer: Offer, kind: str, fix: str) -> Section:
    found = offer.of_kind(kind)
    if len(found) != 1:
        raise OfferError(f"the offer has {len(found)} {kind} m-lines: {fix} (one {kind} m-line)")
    return found[0]


def _check_transport(offer: Offer) -> None:
    _check_bundle(offer)
    candidates = offer.session.get("candidate", [])
    candidates = candidates + [c for section in offer.sections for c in section.values("candidate")]
    if (problem := candidate_problem(candidates)) is not None:  # before any STUN check is sent
        raise OfferError(problem)
    for section in offer.sections:
        _check_fingerprint(section.values("fingerprint") or offer.session.get("fingerprint", []))
        _check_ice(section.values("ice-ufrag") or offer.session.get("ice-ufrag", []),
                   section.values("ice-pwd") or offer.session.get("ice-pwd", []))
        _check_setup(section.values("setup") or offer.session.get("setup", []))


def _check_bundle(offer: Offer) -> None:
    mids = [s.mid for s in offer.sections]
    if None in mids:
        raise OfferError("an m-line of the offer has no a=mid: give every m-line a mid")
    if len(set(mids)) != len(mids):
        raise OfferError("two m-lines of the offer share a mid: give each its own")
    if any(len(str(mid).encode()) > MID_MAX_BYTES for mid in mids):  # each RTP packet carries it
        raise OfferError(f"an a=mid of the offer is longer than {MID_MAX_BYTES} bytes, which an RTP "
                         "header extension cannot carry: use short mids ('0', '1')")
    groups = [g.split() for g in offer.session.get("group", []) if g.split()[:1] == ["BUNDLE"]]
    if len(groups) != 1 or set(groups[0][1:]) != set(mids) or len(groups[0]) != len(mids) + 1:
        raise OfferError("the offer must bundle its m-lines: one 'a=group:BUNDLE' line listing every "
                         "m-line's mid once (max-bundle)")


def _check_fingerprint(values: list[str]) -> None:
    if not values:
        raise OfferError("the offer has no DTLS fingerprint: add 'a=fingerprint:sha-256 ...' "
                         "(a WebRTC stack writes it)")
    for value in values:
        algorithm, _, digest = value.partition(" ")
        size = DIGEST_BYTES.get(algorithm.lower())
        pairs = digest.strip().split(":")
        if size is None or len(pairs) != size or not all(re.fullmatch(r"[0-9A-Fa-f]{2}", p) for p in pairs):
            raise OfferError(f"the offer's DTLS fingerprint is not a valid digest: use "
                             f"'a=fingerprint:sha-256 XX:XX:...' ({'/'.join(DIGEST_BYTES)})")


def _check_ice(ufrags: list[str], pwds: list[str]) -> None:
    checks = (("ice-ufrag", ufrags, ICE_UFRAG_CHARS), ("ice-pwd", pwds, ICE_PWD_CHARS))
    for name, values, (low, high) in checks:
        if len(values) != 1:
            raise OfferError(f"the offer needs one a={name} per m-line (or for the session), "
                             f"it has {len(values)}")
        if not (low <= len(values[0]) <= high and ICE_CHARS.fullmatch(values[0])):
            raise OfferError(f"the offer's a={name} must be {low}-{high} letters, digits, '+' or '/'")


def _check_setup(values: list[str]) -> None:
    if len(values) != 1 or values[0] not in ("actpass", "active", "passive"):
        raise OfferError("the offer's a=setup must be one of actpass, active, passive (offers use actpass)")


def with_opus_dtx_and_fec(answer_sdp: str) -> str:
    """Our answer with `usedtx=1;useinbandfec=1` on every Opus payload type's fmtp.

    aiortc's answer has no Opus fmtp, so browsers would send neither DTX nor FEC (NOTES.md).
    """
    lines = answer_sdp.split("\r\n")
    opus = {m.group(1) for line in lines if (m := OPUS_RTPMAP.match(line))}
    has_fmtp = {m.group(1) for line in lines if (m := FMTP.match(line)) and m.group(1) in opus}
    out: list[str] = []
    for line in lines:
        fmtp = FMTP.match(line)
        out.append(f"a=fmtp:{fmtp.group(1)} {_merged(fmtp.group(2))}" if fmtp and fmtp.group(1) in opus
                   else line)
        rtpmap = OPUS_RTPMAP.match(line)
        if rtpmap and rtpmap.group(1) not in has_fmtp:
            out.append(f"a=fmtp:{rtpmap.group(1)} {_merged('')}")
    return "\r\n".join(out)


def _merged(params: str) -> str:
    pairs = dict(p.strip().split("=", 1) for p in params.split(";") if "=" in p)
    return ";".join(f"{k}={v}" for k, v in (pairs | OPUS_ANSWER_FMTP).items())
