// expect: make_stack: these two chunnels do not fit together
// A chunnel that consumes `int` placed over the udp base, which produces Msg: must not compile.
#include "bertha/bertha.hpp"

struct WantsInts {
    using Upper = std::string;
    using Lower = int;
    static constexpr bertha::ChunnelInfo info{900,
                                              "wants-ints",
                                              "test",
                                              "",
                                              bertha::Match::exact,
                                              bertha::Scope::multilateral,
                                              bertha::Need::none};
};

int main() {
    auto stack = bertha::make_stack(WantsInts{}, bertha::Udp{});
    (void)stack;
}
