"""Plain unit tests of the pure functions: curl's timings, model lists per type, the probe request
per type, validation messages, Host parsing, history summaries."""

from __future__ import annotations

import json

import pytest

from handlers.request_guard import host_name, is_loopback_name
from outbound.timings import curl_timings
from registry import schemas
from registry.probes import ProbeTarget, history_summary, probe_request
from registry.provider_types import PROVIDER_TYPES

# -- curl's timings ---------------------------------------------------------------------------------


def test_timings_of_a_full_https_request_are_cumulative_milliseconds():
    info = {"namelookup": 0.001, "connect": 0.002, "appconnect": 0.005, "starttransfer": 0.009, "total": 0.010}
    assert curl_timings(info, tls=True) == {"dns_ms": 1.0, "connect_ms": 2.0, "tls_ms": 5.0, "first_byte_ms": 9.0,
                                            "total_ms": 10.0}


def test_a_refused_connection_has_no_connect_tls_or_first_byte_even_if_curl_fills_them():
    info = {"namelookup": 0.001, "connect": 0.0, "appconnect": 0.0, "starttransfer": 0.003, "total": 0.003}
    assert curl_timings(info, tls=True) == {"dns_ms": 1.0, "connect_ms": None, "tls_ms": None,
                                            "first_byte_ms": None, "total_ms": 3.0}


def test_a_tls_failure_after_connect_keeps_connect_and_nothing_after_it():
    info = {"namelookup": 0.001, "connect": 0.002, "appconnect": 0.0, "starttransfer": 0.004, "total": 0.004}
    timings = curl_timings(info, tls=True)
    assert (timings["connect_ms"], timings["tls_ms"], timings["first_byte_ms"]) == (2.0, None, None)


def test_plain_http_has_no_tls_phase_and_an_ip_literal_a_zero_dns_phase():
    info = {"namelookup": 0.0, "connect": 0.002, "appconnect": 0.0, "starttransfer": 0.004, "total": 0.005}
    assert curl_timings(info, tls=False) == {"dns_ms": 0.0, "connect_ms": 2.0, "tls_ms": None, "first_byte_ms": 4.0,
                                             "total_ms": 5.0}
    assert curl_timings({}) == dict.fromkeys(("dns_ms", "connect_ms", "tls_ms", "first_byte_ms", "total_ms"))


# -- model lists and requests per type --------------------------------------------------------------

@pytest.mark.parametrize("provider_type, body, expected", [
    ("openai", {"data": [{"id": "a"}, {"id": "b"}, {"id": "a"}, {"no": "id"}, "x"]}, ["a", "b"]),
    ("anthropic", {"data": [{"id": "claude"}]}, ["claude"]),
    ("azure", {"data": [{"id": "gpt"}]}, ["gpt"]),
    ("gemini", {"models": [{"name": "models/gemini-pro"}, {"name": "other"}]}, ["gemini-pro", "other"]),
    ("ollama", {"models": [{"name": "llama3:8b"}]}, ["llama3:8b"]),
    ("openai", {"models": [{"name": "x"}]}, None),
    ("gemini", {"data": [{"id": "x"}]}, None),
    ("openai", {"data": "not a list"}, None),
    ("openai", ["data"], None),
])
def test_offered_models_per_type(provider_type, body, expected):
    assert PROVIDER_TYPES[provider_type].offered_models(json.dumps(body).encode()) == expected


@pytest.mark.parametrize("body", [b"", b"not json", b"\xff\xfe", b"[" * 100_000])
def test_an_answer_that_is_not_json_has_no_model_list(body):
    assert PROVIDER_TYPES["openai"].offered_models(body) is None


@pytest.mark.parametrize("provider_type, url, auth", [
    ("openai", "https://h.example/v1/models", {"Authorization": "Bearer k-123"}),
    ("anthropic", "https://h.example/v1/models", {"x-api-key": "k-123", "anthropic-version": "2023-06-01"}),
    ("gemini", "https://h.example/v1/models", {"x-goog-api-key": "k-123"}),
    ("azure", "https://h.example/v1/models?api-version=2024-10-21", {"api-key": "k-123"}),
    ("ollama", "https://h.example/v1/api/tags", {"Authorization": "Bearer k-123"}),
])
def test_the_probe_request_of_each_type_comes_from_its_table_entry(provider_type, url, auth):
    got_url, headers = probe_request(ProbeTarget(provider_type, "https://h.example/v1", "k-123"))
    assert got_url == url
    assert {k: v for k, v in headers.items() if k != "Accept"} == auth


def test_without_a_key_only_the_fixed_headers_are_sent():
    assert PROVIDER_TYPES["anthropic"].auth_headers(None) == {"anthropic-version": "2023-06-01"}
    assert PROVIDER_TYPES["ollama"].auth_headers(None) == {}


# -- validation messages ----------------------------------------------------------------------------

def test_validation_errors_name_each_field_by_json_pointer_and_never_echo_a_key():
    key = "sk-this-must-never-come-back\n"
    errors = schemas.validation_errors(schemas.provider_create_validator,
                                       {"base_url": "ftp://x", "api_key": key, "models": ["a", "a"], "extra": 1})
    assert [e["path"] for e in errors] == ["/api_key", "/base_url", "/extra", "/models", "/name"]
    messages = {e["path"]: e["message"] for e in errors}
    assert messages["/name"] == "is required" and messages["/extra"] == "is not a known field"
    assert messages["/models"] == "must not repeat a value"
    assert key.strip() not in json.dumps(errors)


def test_a_json_pointer_escapes_slash_and_tilde():
    errors = schemas.validation_errors(schemas.provider_update_validator, {"a/b~c": 1})
    assert errors == [{"path": "/a~1b~0c", "message": "is not a known field"}]


def test_patterns_follow_ecma_262_so_a_final_newline_does_not_pass():
    assert not schemas.provider_update_validator.is_valid({"api_key": "sk-ok-1234\n"})
    assert schemas.provider_update_validator.is_valid({"api_key": "sk-ok-1234"})


# -- Host parsing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("header, name", [
    ("LocalHost:8000", "localhost"), ("localhost.", "localhost"), ("[::1]:8000", "[::1]"), ("[::1]", "[::1]"),
    ("127.0.0.1", "127.0.0.1"), ("[::1].evil.com", "[::1].evil.com"), ("example.com:x", "example.com:x"),
])
def test_host_name_strips_port_and_trailing_dot(header, name):
    assert host_name(header) == name


@pytest.mark.parametrize("name, loopback", [
    ("localhost", True), ("app.localhost", True), ("127.1.2.3", True), ("[::1]", True),
    ("[::ffff:127.0.0.1]", True), ("::1", False), ("localhost.evil.com", False), ("2130706433", False),
    ("10.0.0.1", False), ("[::]", False),
])
def test_is_loopback_name(name, loopback):
    assert is_loopback_name(name) is loopback


# -- history summaries ------------------------------------------------------------------------------

def test_history_summary_counts_and_percentiles():
    results = [{"status": "online", "latency_ms": float(ms)} for ms in range(1, 21)]
    results += [{"status": "offline", "latency_ms": 0.5}] * 5
    summary = history_summary(results)
    assert summary["count"] == 25 and summary["online_pct"] == 80.0
    assert summary["p50_ms"] is not None and summary["p95_ms"] >= summary["p50_ms"]
    assert history_summary([]) == {"count": 0, "online_pct": None, "p50_ms": None, "p95_ms": None}
