# Thin wrapper around CMake; see README.md.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= json smallcaps bundle store

.PHONY: all deps build test demo bench lint format asan fuzz clean

all: build

deps:
	@scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	$(MAKE) --no-print-directory lint

lint: deps
	luacheck -q .
	clang-format --dry-run --Werror core/*.[ch] include/*.h host/*.[ch] host/examples/embed/*.c spec/c/*.[ch] spec/fuzz/*.[ch]

format:
	clang-format -i core/*.[ch] include/*.h host/*.[ch] host/examples/embed/*.c spec/c/*.[ch] spec/fuzz/*.[ch]

asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DOCAP_SANITIZE=ON >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS)

# Each fuzz target for FUZZ_SECONDS with libFuzzer (clang), ASan and UBSan;
# see docs/security.md. `make test` runs the same targets briefly.
fuzz:
	@scripts/deps.sh fuzz
	cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
	  -DOCAP_SANITIZE=ON -DOCAP_FUZZ_LIBFUZZER=ON >/dev/null
	cmake --build build-fuzz -j $(JOBS) --target $(addprefix fuzz_,$(FUZZ_TARGETS))
	FUZZ_SECONDS=$(FUZZ_SECONDS) spec/fuzz/run.sh build-fuzz $(FUZZ_TARGETS)

demo: build
	$(BUILD)/ocap run host/examples/hello.lua
	@echo '--- weather (state kept in .ocap/weather; run make demo again to see it restored)'
	$(BUILD)/ocap run --db .ocap/weather host/examples/weather/host.lua
	@echo '--- caplets (Omnium installs an echo provider and its consumer)'
	$(BUILD)/ocap bundle vats/caplets/echo/echo.lua vats/caplets/consumer/consumer.lua >/dev/null
	$(BUILD)/ocap run vats/caplets/demo.lua

bench: build
	OCAP_BIN=$(BUILD)/ocap $(BUILD)/ocap run bench/run.lua

clean:
	rm -rf $(BUILD) build-asan build-fuzz
