#!/usr/bin/env bash
# Source this file: it installs the official openai package for Node for the second-client test
# (tests/serving/test_node_client.py, `npm install` in tests/serving/node) and tells the suite to
# fail, not skip, without it. Installs Debian's `nodejs` and `npm` when node is missing.

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "ci: installing nodejs and npm (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends nodejs npm >/dev/null
fi
npm install --prefix tests/serving/node --no-audit --no-fund --silent
export COMPANION_REQUIRE_NODE=1
