# SHARP: the two entry points are `make run` and `make test`; both install
# what they need (Debian packages) and build first.

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
MESON      ?= meson
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST     := /usr/bin/python3 -m pytest

# Everything the build, the tests and the benchmarks use, from Debian.
DEB_PACKAGES := build-essential pkg-config meson ninja-build \
	libuv1-dev node-llhttp libnghttp2-dev libssl-dev libc-ares-dev libyaml-dev libre2-dev \
	protobuf-c-compiler libprotobuf-c-dev libcmocka-dev zlib1g-dev libbrotli-dev libzstd-dev libmimalloc-dev \
	python3 python3-pytest python3-pytest-xdist python3-yaml python3-websockets python3-grpcio python3-protobuf python3-h2 python3-hyperframe \
	python3-hpack python3-dnslib python3-brotli python3-zstandard python3-msgpack curl wrk nginx haproxy nghttp2-client h2o nghttp2-proxy \
	openssl procps iproute2 gnuplot-nox clang libclang-rt-14-dev nodejs \
	bpftool libbpf-dev iptables

.PHONY: all deps npm-deps build run example test unit integration asan fuzz clean

all: build

# Installs only what is missing, so repeated runs cost one dpkg query.
# Debian ships npm as a package of its own; a nodejs build that bundles npm
# conflicts with it, so npm is installed only when the command is missing.
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The xDS test tools (test/xds) run on Envoy's official API protos from the
# npm registry: installed exactly as package-lock.json says, again only when
# the lock file changes (the stamp is newer otherwise).
XDS_TEST := test/xds
$(XDS_TEST)/node_modules/.installed: $(XDS_TEST)/package.json $(XDS_TEST)/package-lock.json | deps
	cd $(XDS_TEST) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

npm-deps: $(XDS_TEST)/node_modules/.installed

$(BUILD)/build.ninja:
	$(MESON) setup $(BUILD)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

run: build
	@./scripts/run.sh $(BUILD)

# One of config/examples/ with the upstreams it needs: make example EXAMPLE=sidecar.yaml
EXAMPLE ?= edge.yaml
example: build
	@/usr/bin/python3 scripts/run_example.py config/examples/$(EXAMPLE) --build $(BUILD)

unit: build
	$(MESON) test -C $(BUILD) --print-errorlogs

integration: build npm-deps
	SHARP_BUILD=$(abspath $(BUILD)) $(PYTEST) -q test/integration

$(ASAN_BUILD)/build.ninja:
	$(MESON) setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug

asan: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)

# libFuzzer targets (clang, ASan+UBSan, every library instrumented); see
# test/fuzz/meson.build, scripts/fuzz.sh (bounded runs) and bench/fuzz.sh.
# -O1 with line tables only (enough for the sanitizers' and libFuzzer's
# stack traces): full debug information made this tree, clang with three
# instrumentations, the slowest of the three to build.
$(FUZZ_BUILD)/build.ninja:
	CC=clang CXX=clang++ $(MESON) setup $(FUZZ_BUILD) -Dfuzz=true -Dtests=false \
		-Db_sanitize=address,undefined -Db_lundef=false -Doptimization=1 -Ddebug=false \
		"-Dc_args=-fsanitize=fuzzer-no-link -gline-tables-only" \
		"-Dcpp_args=-fsanitize=fuzzer-no-link -gline-tables-only"

fuzz: deps $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD) $(patsubst test/fuzz/%.c,test/fuzz/%,$(wildcard test/fuzz/fuzz_*.c))

# Every test: unit tests and integration tests on the normal build, then the
# whole suite once more under ASan+UBSan, then each fuzz target for a short
# bounded run. Ends with "N passed, N failed".
# SHARP_TEST_T0: when make started, so the closing summary can say how long
# the installs and builds took.
test: export SHARP_TEST_T0 := $(shell date +%s)
test: build asan fuzz npm-deps
	@./scripts/test.sh $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
