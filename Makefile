# The two commands of the README, and the others. Each target is a script so
# that it runs the same from a fresh clone, in CI and by hand.
.PHONY: all demo test bench fuzz deps build install clean

all: build

# Builds everything and runs the main demo.
demo:
	@bash scripts/demo.sh

# Installs what the tests need (apt-get when missing), then builds and runs the
# whole suite: plain, ASan+UBSan, TSan and the portable fallback build.
test:
	@bash scripts/test.sh

# Go's context benchmarks and the C ones, interleaved, in one table.
bench:
	@bash bench/run.sh

# The model-based fuzzer, for as long as FUZZ_SECONDS says (default 600).
fuzz:
	@bash tests/reliability/fuzz.sh

deps:
	@bash scripts/deps.sh $(basename $(notdir $(wildcard scripts/deps.d/*.txt)))

build:
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null && cmake --build build -j2

install: build
	@cmake --install build

clean:
	rm -rf build build-*
