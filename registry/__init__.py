"""The domain core: the rules of the provider registry, with no HTTP and no SQL strings.

Edges (`server.py`, `handlers/`) call in here; this package calls `store/` (SQL) and `outbound/`
(requests to providers). See ARCHITECTURE.md for the map.
"""
