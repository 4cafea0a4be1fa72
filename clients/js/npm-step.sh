#!/usr/bin/env bash
# Runs one npm step of the Maven build (install, build or test) for the JS SDK.
# Building the SDK is optional for running the service: without Node.js the gateway still runs,
# only the demo page at / has no SDK to load, so install/build warn and go on. Testing is not
# optional: without npm the `test` step fails, so CI cannot pass without running the JS tests.
set -euo pipefail
cd "$(dirname "$0")"
step="$1"
if ! command -v npm >/dev/null 2>&1; then
  if [ "$step" = "test" ] || [ "$step" = "browser-test" ]; then
    echo "npm not found: the JS SDK tests cannot run (install Node.js >= 20, or -Dskip.js=true)" >&2
    exit 1
  fi
  echo "WARNING: npm not found: skipping the JS SDK $step (the demo page at / needs it; install Node.js >= 20)" >&2
  exit 0
fi
case "$step" in
  install) exec npm install --no-audit --no-fund ;;
  build) exec npm run build ;;
  test) exec npm test ;;
  # The demo page in Debian's headless Chromium (clients/browser-test; .ci/run installs chromium).
  browser-test) cd ../browser-test && npm install --no-audit --no-fund && exec npm test ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
