#!/usr/bin/env bash
# Runs every test: unit, integration and end-to-end (`cargo test --all-targets`).
# As root, the e2e tests are mandatory (RK3S_E2E=1); without root they skip.
# Prints cargo's per-binary `test result:` lines and a final `N passed, N failed`.
# Extra arguments go to cargo test (e.g. a test-name filter after `--`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
    export RK3S_E2E=1
fi

log=$(mktemp -t rk3s-tests.XXXXXX)
trap 'rm -f "$log"' EXIT

set +e
cargo test --all-targets --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

echo
echo "== test summary =="
grep -E '^test result:' "$log" || echo "no test results (did the build fail?)"
read -r passed failed < <(awk '
    /^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed;?$/) p += $i
            if ($(i + 1) ~ /^failed;?$/) f += $i
        }
    }
    END { print p + 0, f + 0 }
' "$log")
echo "$passed passed, $failed failed"

if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ]; then
    exit 1
fi
