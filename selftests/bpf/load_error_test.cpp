// A stage the verifier refuses: the loader's error names the interface and the program and
// carries the verifier's own words, so that a user sees why without rerunning anything.
#include "bad_stage.skel.h"
#include "loader/stages.hpp"

#include <doctest/doctest.h>

using namespace bertha;

TEST_CASE("load error: a refused stage reports interface, program and verifier log") {
    load::Owned<bad_stage, bad_stage__destroy> skel(bad_stage__open());
    REQUIRE(skel);
    auto fd = load::load_program(skel->obj, skel->progs.bad_unbounded, load::SharedMaps{},
                                 "veth-test0");
    REQUIRE_FALSE(fd);
    const std::string what = fd.error().what();
    CHECK(what.find("veth-test0: program bad_unbounded") != std::string::npos);
    CHECK(what.find("load refused") != std::string::npos);
    CHECK(what.find("verifier log:") != std::string::npos);
    // The kernel's sentence for the unchecked read, from the log itself.
    CHECK(what.find("invalid access to packet") != std::string::npos);
    INFO(what);
}

TEST_CASE("load error: an unknown stage and a stage without the hook are refused by name") {
    auto none = load::load_stage({"nosuch", ""}, load::Hook::xdp, {}, "lo");
    REQUIRE_FALSE(none);
    CHECK(none.error().what().starts_with("stage nosuch: no such stage (known: count"));
    auto key = load::load_stage({"count", "every=2"}, load::Hook::xdp, {}, "lo");
    REQUIRE_FALSE(key);
    CHECK(key.error().what().find("unknown key 'every'") != std::string::npos);
}
