#!/usr/bin/env bash
# The soak benchmark: server/tests/soak.rs for 10 minutes on a release build
# (64 clients, short and long queries), printing its report line.
# Usage: benches/soak/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
export SLUICE_SOAK_SECONDS="${1:-600}"
cargo test --release -p sluice-server --test soak -- --nocapture 2>&1 | grep -E '^soak:|test result|panicked'
