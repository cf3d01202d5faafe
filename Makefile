# Thin wrapper around CMake; see README.md.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all deps build test demo bench lint format asan clean

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
	clang-format --dry-run --Werror core/*.[ch] host/*.[ch] spec/c/*.[ch]

format:
	clang-format -i core/*.[ch] host/*.[ch] spec/c/*.[ch]

asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DOCAP_SANITIZE=ON >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS)

demo: build
	$(BUILD)/ocap run host/examples/hello.lua
	@echo '--- weather (state kept in .ocap/weather; run make demo again to see it restored)'
	$(BUILD)/ocap run host/examples/weather/host.lua --db .ocap/weather

bench: build
	$(BUILD)/ocap run bench/run.lua

clean:
	rm -rf $(BUILD) build-asan
