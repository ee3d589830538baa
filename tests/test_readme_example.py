"""The README's example of an application (resolve a model, fetch its credentials, call it with
the `openai` package) runs as written against a real server and a fake OpenAI-compatible upstream."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from support.api import http_json
from support.processes import ROOT, TEST_SECRET, run_cli

KEY = "sk-readme-example-0123456789"


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- example: resolve-and-call .*?-->\n```python\n(.*?)```", readme, re.S)
    assert match, "the README's application example is missing"
    return match.group(1)


def test_the_readme_application_example_runs(tmp_path, run_server, threaded_fake_provider):
    threaded_fake_provider.answer("/v1/chat/completions", body={
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "hello from the fake upstream"}}]})
    env = {"BACKEND_API_KEY_SECRET": TEST_SECRET}
    server = run_server(env)
    status, provider = http_json("POST", server.url + "/api/providers", {
        "name": "Fake OpenAI", "base_url": threaded_fake_provider.url + "/v1", "api_key": KEY,
        "models": ["gpt-4o-mini"]})
    assert status == 201
    created = run_cli(["--create-token", "example-app", "--role", "consumer", "--providers", str(provider["id"])],
                      env, tmp_path)
    assert created.returncode == 0, created.stderr
    result = subprocess.run([sys.executable, "-c", readme_example()], capture_output=True, text=True, timeout=60,
                            env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
                                 "REGISTRY_URL": server.url, "REGISTRY_TOKEN": created.stdout.strip(),
                                 "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello from the fake upstream"
    call = [r for r in threaded_fake_provider.requests if r.path == "/v1/chat/completions"]
    assert len(call) == 1 and call[0].headers["authorization"] == f"Bearer {KEY}"
