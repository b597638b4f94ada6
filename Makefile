# Bertha for Linux. `make demo` and `make test` are the two commands a new user runs; both
# install what they need first (`make deps`). Everything built goes under build/.

# `make test` and `make demo` are what users type: build on every core without being asked.
MAKEFLAGS += -j$(shell nproc) --output-sync=target
BUILD    ?= build
CXX      ?= g++
CLANG    ?= clang
BPFTOOL  ?= bpftool
ARCH     := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')

OPT      ?= -O2 -g
WARN     := -Wall -Wextra -Werror
CXXFLAGS += -std=c++2b $(OPT) $(WARN)
INCLUDES := -Iuserspace -Ichunnels -Ibpf/include -Iselftests/lib -I$(BUILD)/skel
CPPFLAGS += $(INCLUDES) -MMD -MP
LDLIBS   := -luring -lbpf -lelf -lz -lpthread
BPFFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror \
            -Ibpf/include -I/usr/include/$(shell uname -m)-linux-gnu

# Debian packages the build, the tests, the demo and the benchmarks use.
DEB_PKGS := g++ make clang llvm libbpf-dev bpftool libxdp-dev liburing-dev libcli11-dev \
            doctest-dev libelf-dev zlib1g-dev iproute2 pkg-config gnuplot-nox python3

# ---- sources --------------------------------------------------------------------------------
LIB_SRCS   := $(wildcard userspace/bertha/*.cpp)
LIB_OBJS   := $(LIB_SRCS:%.cpp=$(BUILD)/obj/%.o)
LIB        := $(BUILD)/libbertha.a

BPF_SRCS   := $(wildcard bpf/*.bpf.c chunnels/*/*.bpf.c)
BPF_OBJS   := $(foreach s,$(BPF_SRCS),$(BUILD)/bpf/$(notdir $(s:.bpf.c=.bpf.o)))
SKELS      := $(foreach s,$(BPF_SRCS),$(BUILD)/skel/$(notdir $(s:.bpf.c=.skel.h)))

UNIT_SRCS  := $(wildcard selftests/unit/*.cpp)
UNIT_BIN   := $(BUILD)/selftests/unit_tests
BPFT_SRCS  := $(wildcard selftests/bpf/*.cpp)
BPFT_BIN   := $(BUILD)/selftests/bpf_tests
EXAMPLES   := $(patsubst examples/%/,$(BUILD)/examples/%,$(sort $(dir $(wildcard examples/*/*.cpp))))
BENCH_SRCS := $(wildcard selftests/bench/*.cpp)
BENCHES    := $(BENCH_SRCS:selftests/bench/%.cpp=$(BUILD)/bench/%)

ALL_CXX_OBJS = $(LIB_OBJS) $(UNIT_SRCS:%.cpp=$(BUILD)/obj/%.o) $(BPFT_SRCS:%.cpp=$(BUILD)/obj/%.o) \
               $(foreach e,$(EXAMPLES),$(patsubst %.cpp,$(BUILD)/obj/%.o,$(wildcard examples/$(notdir $(e))/*.cpp))) \
               $(BENCH_SRCS:%.cpp=$(BUILD)/obj/%.o)

.PHONY: all deps test bench demo clean format
.DEFAULT_GOAL := all

all: $(LIB) $(SKELS) $(UNIT_BIN) $(BPFT_BIN) $(EXAMPLES) $(BENCHES)

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

$(LIB): $(LIB_OBJS)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

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

# Keep example and benchmark objects: without this make deletes them as intermediates after
# linking and recompiles them on every build.
.SECONDARY: $(ALL_CXX_OBJS)

-include $(ALL_CXX_OBJS:.o=.d)

# ---- the two commands ------------------------------------------------------------------------
test: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) CXX="$(CXX)" CPPFLAGS="$(INCLUDES)" CXXFLAGS="$(CXXFLAGS)" selftests/run

demo: deps
	@$(MAKE) --no-print-directory $(BUILD)/examples/echo
	@BUILD=$(BUILD) examples/echo/demo.sh

bench: deps
	@$(MAKE) --no-print-directory $(BENCHES)
	@BUILD=$(BUILD) selftests/bench/run

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp' 'selftests/lib/*.h')

clean:
	rm -rf $(BUILD)
