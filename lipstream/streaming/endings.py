"""Why a session ended, in words for the person watching it (the page, the viewer page)."""

# Session.close reasons -> words
END_REASONS = {
    "deleted": "it was stopped (Stop on its page, or a DELETE request)",
    "server_shutdown": "the server shut down",
    "idle_timeout": "the server received no audio from the page for a few seconds",
    "connect_timeout": "the media connection did not come up in time (network or firewall)",
    "peer_closed": "the publishing page closed its connection",
    "peer_failed": "the connection to the publishing page failed",
    "ssrc_churn": "the page sent from more RTP streams than a WebRTC peer uses (a broken or hostile client)",
    "bad_offer": "the page's SDP offer could not be used",
    "cancelled": "the server stopped while setting it up",
}


def in_words(reason: str | None) -> str:
    """None: the session is closing and has not said why yet."""
    if reason is None:
        return "it is closing"
    return END_REASONS.get(reason, reason.replace("_", " "))
