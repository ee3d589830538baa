"""Requests the server sends out (probes of providers): Tornado's curl client, curl's phase timings,
and curl's failures in a user's words. Knows nothing of providers: the core says what to request
and reads the answer."""
