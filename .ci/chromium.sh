#!/usr/bin/env bash
# Source this file: it makes sure a headless-capable Chromium is installed for the browser test
# (tests/serving/test_browser.py) and tells the test suite to fail, not skip, without one.
# Installs Debian's `chromium` package when no Chromium-family binary is on PATH.

companion_chromium_bin() {
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        command -v "$name" 2>/dev/null && return 0
    done
    return 0
}

if [ -z "$(companion_chromium_bin)" ]; then
    echo "ci: installing chromium (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends chromium >/dev/null
fi
COMPANION_CHROMIUM="$(companion_chromium_bin)"
if [ -z "$COMPANION_CHROMIUM" ]; then
    echo "ci: Chromium is not installed and could not be installed" >&2
    return 1 2>/dev/null || exit 1
fi
export COMPANION_CHROMIUM
export COMPANION_REQUIRE_BROWSER=1
echo "ci: $("$COMPANION_CHROMIUM" --version 2>/dev/null | head -n 1) for the browser test"
