#!/usr/bin/env bash
# make test, extra step: the model-based fuzzer (libFuzzer, ASan+UBSan,
# fault injection) for a bounded time on the committed seed corpus.
set -uo pipefail
cd "$(dirname "$0")/../.."
FUZZ_SECONDS=${FUZZ_SECONDS_TEST:-60} bash tests/reliability/fuzz.sh
