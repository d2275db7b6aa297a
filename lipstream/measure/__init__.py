"""Measuring a live `lipstream serve` from outside: latency, soak, and the helpers both share."""
