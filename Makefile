# Bertha for Linux. `make demo` and `make test` are the two commands a new user runs; both
# install what they need first (`make deps`). Everything built goes under build/.

# `make test` and `make demo` are what users type: build on every core without being asked.
ifeq ($(MAKELEVEL),0)
MAKEFLAGS += -j$(shell nproc) --output-sync=target
endif
BUILD    ?= build
CXX      ?= g++
CLANG    ?= clang
BPFTOOL  ?= bpftool
ARCH     := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')

OPT      ?= -O2 -g
WARN     := -Wall -Wextra -Werror
CXXFLAGS += -std=c++2b $(OPT) $(WARN)
INCLUDES := -I. -Iuserspace -Ichunnels -Ibpf/include -Iselftests/lib -I$(BUILD)/skel
CPPFLAGS += $(INCLUDES) -MMD -MP
LDLIBS   := -luring -lxdp -lbpf -lelf -lz -lpthread
BPFFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror \
            -Ibpf/include -I/usr/include/$(shell uname -m)-linux-gnu

# Debian packages the build, the tests, the demo and the benchmarks use. libclang-rt-14-dev
# holds libFuzzer and the sanitizer runtimes for Debian 12's clang (14): keep the two in step.
# memcached: the key-value tests check examples/kv against the real thing (started by them, on
# loopback, never as a service).
DEB_PKGS := g++ make clang llvm libbpf-dev bpftool libxdp-dev liburing-dev libcli11-dev \
            doctest-dev libelf-dev zlib1g-dev iproute2 pkg-config gnuplot-nox python3 sockperf \
            memcached libclang-rt-14-dev nutcracker
# What `make vmtest` needs on top (not installed for `make test`).
VMTEST_PKGS := qemu-system-x86 busybox-static

# ---- sources --------------------------------------------------------------------------------
# libbertha.a holds the core, the AF_XDP socket wrapper (userspace/xsk), the key-value protocol
# (userspace/kv: memcached's, shared by examples/kv, the shard chunnel and its tests) and
# libbertha-load (loader/*.cpp): connections attach their offloads in-process through it. The command line,
# loader/cli/*.cpp, becomes $(BUILD)/bertha-load.
LIB_SRCS   := $(wildcard userspace/bertha/*.cpp userspace/xsk/*.cpp userspace/kv/*.cpp loader/*.cpp)
LIB_OBJS   := $(LIB_SRCS:%.cpp=$(BUILD)/obj/%.o)
LIB        := $(BUILD)/libbertha.a

# selftests/bpf/progs/*.bpf.c: programs that exist only for tests (e.g. one the verifier refuses).
BPF_SRCS   := $(wildcard bpf/*.bpf.c chunnels/*/*.bpf.c selftests/bpf/progs/*.bpf.c)
BPF_OBJS   := $(foreach s,$(BPF_SRCS),$(BUILD)/bpf/$(notdir $(s:.bpf.c=.bpf.o)))
SKELS      := $(foreach s,$(BPF_SRCS),$(BUILD)/skel/$(notdir $(s:.bpf.c=.skel.h)))

CLI_SRCS   := $(wildcard loader/cli/*.cpp)
CLI_BIN    := $(if $(CLI_SRCS),$(BUILD)/bertha-load)
UNIT_SRCS  := $(wildcard selftests/unit/*.cpp)
UNIT_BIN   := $(BUILD)/selftests/unit_tests
BPFT_SRCS  := $(wildcard selftests/bpf/*.cpp)
BPFT_BIN   := $(BUILD)/selftests/bpf_tests
EXAMPLES   := $(patsubst examples/%/,$(BUILD)/examples/%,$(sort $(dir $(wildcard examples/*/*.cpp))))
BENCH_SRCS := $(wildcard selftests/bench/*.cpp)
BENCHES    := $(BENCH_SRCS:selftests/bench/%.cpp=$(BUILD)/bench/%)
FUZZ_SRCS  := $(wildcard selftests/fuzz/*_fuzz.cpp)
FUZZERS    := $(FUZZ_SRCS:selftests/fuzz/%.cpp=$(BUILD)/fuzz/%)
CORPUS_SRCS:= $(wildcard selftests/fuzz/*_corpus.cpp)
CORPUS_GENS:= $(CORPUS_SRCS:selftests/fuzz/%.cpp=$(BUILD)/fuzz/%)

ALL_CXX_OBJS = $(LIB_OBJS) $(CLI_SRCS:%.cpp=$(BUILD)/obj/%.o) $(UNIT_SRCS:%.cpp=$(BUILD)/obj/%.o) $(BPFT_SRCS:%.cpp=$(BUILD)/obj/%.o) \
               $(foreach e,$(EXAMPLES),$(patsubst %.cpp,$(BUILD)/obj/%.o,$(wildcard examples/$(notdir $(e))/*.cpp))) \
               $(BENCH_SRCS:%.cpp=$(BUILD)/obj/%.o) $(CORPUS_SRCS:%.cpp=$(BUILD)/obj/%.o)

.PHONY: all deps test vmtest bench demo clean format
.DEFAULT_GOAL := all

all: $(LIB) $(SKELS) $(CLI_BIN) $(UNIT_BIN) $(BPFT_BIN) $(EXAMPLES) $(BENCHES) $(FUZZERS) $(CORPUS_GENS)

# ---- dependencies: one dpkg-query when everything is present --------------------------------
deps:
	@have=" $$(dpkg-query -W -f='$${db:Status-Abbrev}$${Package} ' $(DEB_PKGS) 2>/dev/null) "; \
	missing=; for p in $(DEB_PKGS); do \
	    case "$$have" in *" ii $$p "*) ;; *) missing="$$missing $$p";; esac; done; \
	if [ -n "$$missing" ]; then \
	    echo "deps: installing from Debian:$$missing"; \
	    if [ "$$(id -u)" != 0 ]; then echo "deps: apt-get needs root; install:$$missing" >&2; exit 1; fi; \
	    log=$$(mktemp); \
	    { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	    } >"$$log" 2>&1 || { cat "$$log" >&2; rm -f "$$log"; \
	        echo "deps: apt-get install failed for:$$missing" >&2; exit 1; }; \
	    rm -f "$$log"; \
	fi

# ---- BPF: clang -> object -> bpftool skeleton, which the user objects include ----------------
define bpf_rule
$(BUILD)/bpf/$(notdir $(1:.bpf.c=.bpf.o)): $(1) $(wildcard bpf/include/bertha/*.h $(dir $(1))*.h) | $(BUILD)/bpf
	$(CLANG) $(BPFFLAGS) -I$(dir $(1)) -c $(1) -o $$@
endef
$(foreach s,$(BPF_SRCS),$(eval $(call bpf_rule,$(s))))

$(BUILD)/skel/%.skel.h: $(BUILD)/bpf/%.bpf.o | $(BUILD)/skel
	$(BPFTOOL) gen skeleton $< name $(subst -,_,$*) > $@.tmp && mv $@.tmp $@

$(BUILD)/bpf $(BUILD)/skel:
	@mkdir -p $@

# ---- C++ -------------------------------------------------------------------------------------
# Every C++ object waits for the skeletons on its first build; afterwards -MMD records exactly
# which skeletons and headers it includes, so touching one file rebuilds only its dependents.
$(BUILD)/obj/%.o: %.cpp | $(SKELS)
	@mkdir -p $(@D)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

# Rebuilt from scratch: `ar r` keeps members whose sources are gone (a renamed or split file),
# and their stale symbols would win at link time.
$(LIB): $(LIB_OBJS)
	@mkdir -p $(@D)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/bertha-load: $(CLI_SRCS:%.cpp=$(BUILD)/obj/%.o) $(LIB)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)

$(UNIT_BIN): $(UNIT_SRCS:%.cpp=$(BUILD)/obj/%.o) $(LIB)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)

$(BPFT_BIN): $(BPFT_SRCS:%.cpp=$(BUILD)/obj/%.o) $(LIB)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)

# No '%' inside the secondary expansion: make substitutes the stem for the first '%' of the
# prerequisite text before expanding it, which emptied the object list. $$* is the stem.
.SECONDEXPANSION:
$(BUILD)/examples/%: $$(addprefix $(BUILD)/obj/,$$(addsuffix .o,$$(basename $$(wildcard examples/$$*/*.cpp)))) $(LIB)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/selftests/bench/%.o $(LIB)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)

# ---- fuzz targets: libFuzzer, built with clang ------------------------------------------------
# Every selftests/fuzz/NAME.cpp whose NAME ends in _fuzz becomes $(BUILD)/fuzz/NAME, compiled
# with clang together with the sources it tests, all of them with -DBERTHA_FUZZING (which only
# these objects, under $(BUILD)/fuzz/obj/, ever see: wire.cpp then skips its checksum so that
# mutated datagrams reach the decoders). The sources a target tests are FUZZ_LIB_SRCS unless it
# lists its own, on a line above FUZZ_OBJS: `NAME_SRCS := userspace/bertha/wire.cpp x.cpp`. They
# must be plain C++20 that includes only the standard library and each other's headers.
# Every selftests/fuzz/NAME_corpus.cpp becomes $(BUILD)/fuzz/NAME_corpus, built with $(CXX)
# against libbertha: `NAME_corpus DIR` writes NAME_fuzz's seeds (selftests/run uses them).
FUZZ_CXX      ?= clang++
FUZZ_OPT      ?= -O1 -g
FUZZ_FLAGS    := -std=c++20 $(FUZZ_OPT) -fsanitize=fuzzer,address,undefined \
                 -fno-sanitize-recover=all -DBERTHA_FUZZING $(WARN) -Iuserspace -Ibpf/include
FUZZ_LIB_SRCS := userspace/bertha/wire.cpp
fuzz_objs      = $(patsubst %.cpp,$(BUILD)/fuzz/obj/%.o,\
                     selftests/fuzz/$(1).cpp $(or $($(1)_SRCS),$(FUZZ_LIB_SRCS)))
FUZZ_OBJS     := $(sort $(foreach f,$(FUZZERS),$(call fuzz_objs,$(notdir $(f)))))

$(BUILD)/fuzz/obj/%.o: %.cpp
	@mkdir -p $(@D)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -MMD -MP -c $< -o $@

define fuzz_rule
$(BUILD)/fuzz/$(1): $(call fuzz_objs,$(1))
	@mkdir -p $$(@D)
	$(FUZZ_CXX) $(FUZZ_FLAGS) $$^ -o $$@
endef
$(foreach f,$(FUZZERS),$(eval $(call fuzz_rule,$(notdir $(f)))))

$(BUILD)/fuzz/%_corpus: $(BUILD)/obj/selftests/fuzz/%_corpus.o $(LIB)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)

# Keep example, benchmark and fuzz objects: without this make deletes them as intermediates
# after linking and recompiles them on every build.
.SECONDARY: $(ALL_CXX_OBJS) $(FUZZ_OBJS)

-include $(ALL_CXX_OBJS:.o=.d) $(FUZZ_OBJS:.o=.d)

# ---- the two commands ------------------------------------------------------------------------
test: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) CXX="$(CXX)" CPPFLAGS="$(INCLUDES)" CXXFLAGS="$(CXXFLAGS)" selftests/run

# The BPF and kernel-facing selftests on other kernels (Debian's 6.1 and 6.12), in qemu (TCG):
# vmtest/README.md. Downloads the kernels once into build/vmtest/. The '+' streams its output
# (--output-sync would hold minutes of it back until the end); it also runs under make -n.
vmtest: deps
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(VMTEST_PKGS)"
	@$(MAKE) --no-print-directory all
	+@BUILD=$(BUILD) vmtest/run

# `make demo`: the key-value service across two hosts (memcached shards behind the shard
# chunnel: xdp, client and proxy negotiated, loaded and compared); `make demo-echo`: the echo
# demo (udp, noop chunnels, xsk).
.PHONY: demo-echo
demo: deps
	@$(MAKE) --no-print-directory $(BUILD)/examples/kv $(BUILD)/bertha-load
	@BUILD=$(BUILD) examples/kv/demo.sh

demo-echo: deps
	@$(MAKE) --no-print-directory $(BUILD)/examples/echo
	@BUILD=$(BUILD) examples/echo/demo.sh

bench: deps
	@$(MAKE) --no-print-directory $(BENCHES)
	@BUILD=$(BUILD) selftests/bench/run

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp' 'selftests/lib/*.h')

clean:
	rm -rf $(BUILD)
