"""The second official client: the `openai` package for Node (7.x), driven through `node`.

Skipped (with the reason) where node or the package is missing, except in CI, where `.ci/node.sh`
installs the package (`npm install` in tests/serving/node) and sets COMPANION_REQUIRE_NODE=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.serving.conftest import RunningServer

HERE = Path(__file__).parent / "node"


@pytest.fixture
def node() -> str:
    binary = shutil.which("node")
    missing = None
    if binary is None:
        missing = "no node binary"
    elif not (HERE / "node_modules" / "openai").is_dir():
        missing = f"no openai package for Node: npm install --prefix {HERE}"
    if missing:
        if os.environ.get("COMPANION_REQUIRE_NODE") == "1":
            pytest.fail(f"COMPANION_REQUIRE_NODE=1 but {missing} (see .ci/node.sh)")
        pytest.skip(missing)
    return binary  # type: ignore[return-value]


@pytest.mark.slow
def test_the_node_client_gets_json_logprobs_streams_and_clear_errors(node: str, server: RunningServer) -> None:
    run = subprocess.run(
        [node, str(HERE / "client.mjs"), server.base_url], capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert "ada" in out["models"] and "companion-chat" in out["models"]
    assert out["json"] == 20 and out["schema"] == 20, out["errors"]
    assert out["schemaKeys"] == ["name", "age"]
    assert len(out["logprobs"]) == out["completionTokens"] and all(n == 2 for _, _, n in out["logprobs"])
    assert isinstance(json.loads(out["streamed"]), dict)
    assert out["toolsStatus"] == 400 and "no tool format" in out["toolsMessage"]
