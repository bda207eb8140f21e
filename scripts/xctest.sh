#!/usr/bin/env bash
# Runs an XCTest command (the arguments) and, when it fails, repeats the
# failing assertions and test cases after its output. A suite prints
# thousands of lines and CI keeps only the last few: without this the name
# of the one failing test scrolls away. The whole output stays in the log.
set -uo pipefail
log="${XCTEST_LOG:-.build/xctest-last.log}"
mkdir -p "$(dirname "$log")"
"$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
    echo "=== failed (exit $status): $*"
    echo "=== what failed (whole output in $log):"
    grep -E "error: |: error|Test Case '.*' failed|Fatal error|fatal error|Crash|signal|Exited with" "$log" | tail -n 40
fi
exit "$status"
