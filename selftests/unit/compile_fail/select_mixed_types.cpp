// expect: select: every alternative must offer the same data type upward
// Two implementations of one slot that hand different types upward cannot share a select.
#include "bertha/bertha.hpp"
#include "noop/noop.hpp"

struct Strings {
    using Upper = std::string;
    using Lower = bertha::Msg;
    static constexpr bertha::ChunnelInfo info{901,
                                              "strings",
                                              "test",
                                              "",
                                              bertha::Match::exact,
                                              bertha::Scope::multilateral,
                                              bertha::Need::none};
};

int main() {
    auto s = bertha::select(bertha::noop::Noop{}, Strings{});
    (void)s;
}
