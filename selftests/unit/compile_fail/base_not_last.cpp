// expect: make_stack: the last chunnel must be a base chunnel
// A stack must end in a base that makes the connection; a noop cannot.
#include "bertha/bertha.hpp"
#include "noop/noop.hpp"

int main() {
    auto stack = bertha::make_stack(bertha::noop::Noop{});
    (void)stack;
}
