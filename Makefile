# Peregrine: `make serve` serves, `make test` is the full gate (what CI runs),
# `make check` the quick loop for day-to-day work (under 5 minutes).
# All install what is missing (libev-dev, curl, python3) first.

PORT ?= 8080
ARGS ?=
CC_STRICT ?= clang
CWARN = -std=c11 -Wall -Wextra -Werror -pedantic -Wshadow -Wconversion -Wno-sign-conversion
SAN = -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fuse-ld=lld
BUILD_TMP ?= .build/ctests

.PHONY: deps build serve test check check-swift api api-check test-c cwarn swift-test test-asan test-tsan measure bench fuzz fuzz-body fuzz-diff clean soak soak-quick check-libev cluster-test cluster-test-quick restart-test test-hummingbird hb-hello

deps:
	@./scripts/install-deps.sh

build: deps
	swift build -c release

# Hello, World! on port 8080 (PORT=… and ARGS="--trigger edge …" to change).
serve: build
	.build/release/peregrine serve --port $(PORT) $(ARGS)

# Everything: strict C warnings, the C parser tests under ASan/UBSan, a
# bounded fuzz session, a bounded differential fuzz session (C parser vs
# Swift parser), XCTest, XCTest again under AddressSanitizer, the
# multi-threaded tests under ThreadSanitizer, and the soak at small counts
# (about a minute; the full `make soak`, 2-3 minutes, is not in it), and the
# black-box libev checks (past select's FD_SETSIZE, the Date tick), and the
# cluster test with 6-second phases. Any finding fails the run.
test: deps cwarn api-check test-c fuzz fuzz-diff swift-test test-asan test-tsan soak-quick check-libev cluster-test-quick test-hummingbird

# The quick loop: strict C warnings, the C tests under ASan/UBSan, and the
# XCTest suites on the default engine (epoll, level) only. About 3 minutes
# from a built tree; `make test` is the gate.
CHECK_ENGINES ?= epoll/level
check: deps cwarn api-check test-c check-swift

check-swift:
	swift build --build-tests
	PEREGRINE_TEST_ENGINES=$(CHECK_ENGINES) scripts/xctest.sh swift test --skip-build --disable-swift-testing

# The public API of the Swift library products, one symbol a line
# (docs/public-api.txt, from the compiler's symbol graphs; `package` plumbing
# left out). `api` rewrites it, `api-check` fails with the diff when a change
# to the surface was not written there (about 10 s from a built tree).
api:
	python3 scripts/public-api.py

api-check:
	python3 scripts/public-api.py --check

# libev on each of its backends, black-box (scripts/check-libev.py, ~20 s).
check-libev: build
	python3 scripts/check-libev.py

# The C core compiles clean with warnings as errors, under clang and gcc.
cwarn:
	@for f in csrc/*.c; do \
	  $(CC_STRICT) $(CWARN) -Icsrc/include -fsyntax-only $$f || exit 1; \
	  if command -v gcc >/dev/null; then gcc $(CWARN) -Icsrc/include -fsyntax-only $$f || exit 1; fi; \
	done; echo "cwarn: csrc/*.c clean with $(CWARN)"

# The C parsers: http1.c against the one case table (Tests/ParserCases/cases.txt), proxy.c;
# the send queue's file links (test_sendfile.c, over the real engines). Then
# the connection, response writer, offload and timer state machines against a
# real server from the whole C core over loopback (Tests/CTests/harness.h),
# under ASan (LSan on) and UBSan.
C_STATE_TESTS = test_conn test_response test_send_head test_offload test_stream test_stream_end test_defer_body test_tick test_timer test_idle_restart
test-c:
	@mkdir -p $(BUILD_TMP)
	$(CC_STRICT) $(CWARN) $(SAN) -Icsrc/include csrc/http1.c Tests/CTests/test_http1.c -o $(BUILD_TMP)/test_http1
	$(BUILD_TMP)/test_http1 Tests/ParserCases/cases.txt
	$(CC_STRICT) $(CWARN) $(SAN) -Icsrc/include -Icsrc csrc/*.c Tests/CTests/test_sendfile.c -lev -lpthread -o $(BUILD_TMP)/test_sendfile
	$(BUILD_TMP)/test_sendfile
	$(CC_STRICT) $(CWARN) $(SAN) -Icsrc/include csrc/proxy.c Tests/CTests/test_proxy.c -o $(BUILD_TMP)/test_proxy
	$(BUILD_TMP)/test_proxy
	@for t in $(C_STATE_TESTS); do \
	  $(CC_STRICT) $(CWARN) $(SAN) -Icsrc/include csrc/*.c Tests/CTests/$$t.c -lev -lpthread -o $(BUILD_TMP)/$$t || exit 1; \
	done
	@for t in $(C_STATE_TESTS); do $(BUILD_TMP)/$$t || exit 1; done
	$(CC_STRICT) $(CWARN) $(SAN) -Icsrc/include csrc/http1.c Tests/CTests/test_body_stream.c -o $(BUILD_TMP)/test_body_stream
	$(BUILD_TMP)/test_body_stream

swift-test:
	swift build --build-tests
	scripts/xctest.sh swift test --skip-build --disable-swift-testing

# Leak detection is off here: XCTest and Foundation keep objects until exit,
# and LSan suppressions match whole stacks (XCTest's main is under every
# test), so suppressing theirs would hide ours. The C tests keep LSan on.
# Swift has no UBSan; test-c and fuzz run the C code under UBSan.
test-asan:
	swift build --build-tests --sanitize=address --scratch-path .build-asan
	ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 XCTEST_LOG=.build-asan/xctest-last.log scripts/xctest.sh swift test --skip-build --sanitize=address \
	  --scratch-path .build-asan --disable-swift-testing

TSAN_TESTS = testTwoThreadsEightClients|testAcceptStormOf300Connections|testConnectionIdsAreUniqueAcrossLoops|testStopWithLiveConnections|testEchoEightMiBSlowReaderBoundedMemory|ShutdownTests|OffloadTests|StreamShutdownTests|ResponseStreamTests|testWriterSuspendsAtTheHighWatermark|testClientLeavingCancelsTheTask
test-tsan:
	swift build --build-tests --sanitize=thread --scratch-path .build-tsan
	TSAN_OPTIONS=halt_on_error=1 XCTEST_LOG=.build-tsan/xctest-last.log scripts/xctest.sh swift test --skip-build --sanitize=thread --scratch-path .build-tsan \
	  --disable-swift-testing --filter '$(TSAN_TESTS)'

# Core figures for the closing note: wrk keep-alive CPU per request, malloc
# calls per request, RSS per idle connection (see scripts/measure-core.sh).
measure: build
	./scripts/install-deps.sh wrk
	./scripts/measure-core.sh

# The side-by-side suite (bench/bench.py): Peregrine's engines, the floor,
# nginx, SwiftNIO and a Python epoll server. QUICK=1: a one-minute smoke run.
bench: deps
	./scripts/install-deps.sh wrk ab nginx gnuplot
	python3 bench/bench.py $(if $(QUICK),--quick,) $(BENCH_ARGS)

# Soak (scripts/soak.py): per engine, 1,000,000 checked requests (keep-alive,
# pipelined, connection per request, malformed), then 10,000 open/close cycles
# each against hello, echo, upload and static (closes and resets at every
# stage of requests, echoes, uploads and downloads, some left to the server's
# timers); RSS within 5% and descriptors exactly back after warm-up, 0 wrong or
# missing answers. SOAK_ENGINES=all (or a list such as epoll/oneshot,threaded),
# SOAK_REQUESTS, SOAK_CYCLES, SOAK_TRANSFER_CYCLES (upload and static; default
# SOAK_CYCLES), SOAK_ONLY=load|cycles|transfers, SOAK_ARGS="--threads 2" change it. soak-quick: the same checks, small counts.
soak: build
	python3 scripts/soak.py

soak-quick: build
	SOAK_REQUESTS=$${SOAK_REQUESTS:-100000} SOAK_CYCLES=$${SOAK_CYCLES:-2000} python3 scripts/soak.py

# The restart measurement (scripts/restart-test.py): per event engine, 10
# restarts (a new `peregrine serve` on the same port, then SIGTERM to the old)
# under wrk -t1 -c50; prints socket errors and non-2xx answers, fails unless 0.
restart-test: build
	./scripts/install-deps.sh wrk
	python3 scripts/restart-test.py

# Hummingbird applications on Peregrine (integrations/hummingbird/peregrine-hummingbird, a
# package of its own: the root package stays free of SwiftNIO and Hummingbird).
# The first build takes 3-5 minutes on 2 cores (Hummingbird and SwiftNIO).
HB_PKG = integrations/hummingbird/peregrine-hummingbird
test-hummingbird: deps
	swift build --build-tests --package-path $(HB_PKG)
	XCTEST_LOG=$(HB_PKG)/.build/xctest-last.log scripts/xctest.sh swift test --skip-build --package-path $(HB_PKG) --disable-swift-testing

# A Hummingbird router answering Hello, World! served by Peregrine on :$(PORT)
# (ARGS="--engine swift --threads 2" passes flags through).
hb-hello: deps
	swift build -c release --package-path $(HB_PKG) --product hb-peregrine-hello
	$(HB_PKG)/.build/release/hb-peregrine-hello $(PORT) $(ARGS)

clean:
	rm -rf .build .build-asan .build-tsan bench/swift/.build $(HB_PKG)/.build

# Bounded libFuzzer session on the C parser (clang from the Swift toolchain).
FUZZ_SECONDS ?= 60
fuzz:
	@mkdir -p $(BUILD_TMP) $(BUILD_TMP)/corpus
	$(CC_STRICT) -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fuse-ld=lld -Icsrc/include csrc/http1.c fuzz/fuzz_http1.c -o $(BUILD_TMP)/fuzz_http1
	@$(BUILD_TMP)/fuzz_http1 -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 \
	  -artifact_prefix=$(BUILD_TMP)/ $(BUILD_TMP)/corpus fuzz/corpus > $(BUILD_TMP)/fuzz.log 2>&1; rc=$$?; \
	  grep -E "^Done [0-9]+ runs|stat::number_of_executed_units" $(BUILD_TMP)/fuzz.log; \
	  if [ $$rc -ne 0 ]; then tail -80 $(BUILD_TMP)/fuzz.log; echo "fuzz: finding, input saved under $(BUILD_TMP)/"; fi; \
	  exit $$rc

# Bounded differential libFuzzer session: every input goes to the C parser
# and to the Swift one (fuzz/fuzz_diff.swift), which must agree exactly.
# Built outside SwiftPM: http1.c with clang (ASan + UBSan), PeregrineCore
# and the Swift parser as their own modules and the harness (with the
# conformance suite's Feeding.swift, ParserAdapters.swift and table reader) with
# swiftc (ASan), the parsers instrumented for coverage. Seeds: fuzz/corpus
# plus the inputs of the parser case table (Tests/ParserCases/cases.txt),
# written by the harness itself.
# SWIFT_BACKTRACE=enable=no: on a finding, libFuzzer reports (the Swift
# backtracer would fight ASan over the crashed process).
FUZZ_DIFF_TMP ?= .build/fuzz-diff
SWIFTC ?= swiftc
FUZZ_SWIFTC = $(SWIFTC) -swift-version 6 -O -g -parse-as-library -wmo -package-name Peregrine
# What the Swift parser needs of PeregrineCore, without the files that import
# swift-log and swift-metrics (which swiftc alone cannot find here).
FUZZ_CORE_SRC = Sources/PeregrineCore/Limits.swift Sources/PeregrineCore/Request.swift \
  Sources/PeregrineCore/SocketAddress.swift Sources/PeregrineCore/Connection.swift
FUZZ_DIFF_SRC = fuzz/fuzz_diff.swift Tests/ParserConformanceTests/Feeding.swift \
  Tests/ParserConformanceTests/ParserAdapters.swift Tests/ParserConformanceTests/ConformanceCases.swift
# The streamed-body step (prg_http_body_next): whole, split and byte-wise feeds must agree.
fuzz-body:
	@mkdir -p $(BUILD_TMP) $(BUILD_TMP)/corpus-body
	$(CC_STRICT) -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fuse-ld=lld -Icsrc/include csrc/http1.c fuzz/fuzz_body_stream.c -o $(BUILD_TMP)/fuzz_body_stream
	@$(BUILD_TMP)/fuzz_body_stream -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 \
	  -artifact_prefix=$(BUILD_TMP)/ $(BUILD_TMP)/corpus-body > $(BUILD_TMP)/fuzz-body.log 2>&1; rc=$$?; \
	  grep -E "^Done [0-9]+ runs|stat::number_of_executed_units" $(BUILD_TMP)/fuzz-body.log; \
	  if [ $$rc -ne 0 ]; then tail -80 $(BUILD_TMP)/fuzz-body.log; echo "fuzz-body: finding, input saved under $(BUILD_TMP)/"; fi; \
	  exit $$rc

fuzz-diff:
	@D=$(FUZZ_DIFF_TMP); mkdir -p $$D/cmod $$D/corpus && rm -rf $$D/seeds && mkdir -p $$D/seeds && \
	printf 'module CPeregrine {\n    header "%s/csrc/include/peregrine.h"\n    export *\n}\n' "$(CURDIR)" > $$D/cmod/module.modulemap && \
	set -x && \
	$(CC_STRICT) -std=c11 -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all \
	  -Icsrc/include -c csrc/http1.c -o $$D/http1.o && \
	$(FUZZ_SWIFTC) -sanitize=address -module-name PeregrineCore -emit-module -emit-module-path $$D/PeregrineCore.swiftmodule \
	  -c $(FUZZ_CORE_SRC) -o $$D/PeregrineCore.o && \
	$(FUZZ_SWIFTC) -sanitize=fuzzer,address -I $$D -module-name PeregrineSwiftEpoll -emit-module \
	  -emit-module-path $$D/PeregrineSwiftEpoll.swiftmodule -c Sources/PeregrineSwiftEpoll/HTTP1Parser.swift -o $$D/HTTP1Parser.o && \
	$(FUZZ_SWIFTC) -sanitize=address -I $$D -I $$D/cmod -module-name FuzzDiff -c $(FUZZ_DIFF_SRC) -o $$D/fuzz_diff.o && \
	$(SWIFTC) -sanitize=fuzzer,address -use-ld=lld $$D/fuzz_diff.o $$D/HTTP1Parser.o $$D/PeregrineCore.o $$D/http1.o -o $$D/fuzz_diff && \
	PRG_PARSER_CASES=$(CURDIR)/Tests/ParserCases/cases.txt PRG_FUZZ_DUMP_SEEDS=$$D/seeds $$D/fuzz_diff
	@D=$(FUZZ_DIFF_TMP); SWIFT_BACKTRACE=enable=no $$D/fuzz_diff -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 \
	  -artifact_prefix=$$D/ $$D/corpus fuzz/corpus $$D/seeds > $$D/fuzz.log 2>&1; rc=$$?; \
	  grep -E "^Done [0-9]+ runs|stat::number_of_executed_units" $$D/fuzz.log; \
	  if [ $$rc -ne 0 ]; then tail -80 $$D/fuzz.log; echo "fuzz-diff: finding, input saved under $$D/"; fi; \
	  exit $$rc

# Three Peregrine hosts in network namespaces behind HAProxy (PROXY v2, health
# checks) and nginx (upstream keep-alive), under load: a rolling restart with 0
# failed requests, a SIGKILLed backend marked down and back, client addresses
# through PROXY (scripts/cluster_test.py). CLUSTER_SECONDS per phase (20).
cluster-test: build
	./scripts/install-deps.sh wrk nginx haproxy ip
	python3 scripts/cluster_test.py

cluster-test-quick: build
	./scripts/install-deps.sh wrk nginx haproxy ip
	CLUSTER_SECONDS=6 python3 scripts/cluster_test.py
