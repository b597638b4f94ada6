// Writes the seed corpus of wire_fuzz into a directory: for every message type its body alone,
// and the same body framed as datagrams (a split offer's parts one after another, the way the
// fuzz target reads a run of datagrams). Built with g++ against libbertha, so the seeds are also
// a check that the library's encoder and the clang-built fuzz target agree.
//
//   $(BUILD)/fuzz/wire_corpus DIR
#include "bertha/wire.hpp"

#include <cstdio>
#include <string>
#include <vector>

using namespace bertha::wire;
using Bytes = std::vector<uint8_t>;

namespace {

std::string dir;
int written = 0;

bool write(const std::string& name, const Bytes& b) {
    std::string path = dir + "/" + name;
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) {
        std::perror(path.c_str());
        return false;
    }
    bool ok = std::fwrite(b.data(), 1, b.size(), f) == b.size();
    ok = std::fclose(f) == 0 && ok;
    if (!ok) std::perror(path.c_str());
    written += ok;
    return ok;
}

// The body, then its datagrams concatenated.
bool seed(const std::string& name, Type type, const Bytes& body, uint16_t flags = 0) {
    Bytes dgrams;
    for (auto& d : frame(type, flags, 0x0123456789abcdefull, body))
        dgrams.insert(dgrams.end(), d.begin(), d.end());
    return !dgrams.empty() && write(name + ".body", body) && write(name + ".dgram", dgrams);
}

Offer offer(size_t slots, size_t alts, size_t name_len) {
    Offer o;
    for (size_t s = 0; s < slots; ++s) {
        Slot slot{uint32_t(0x1000 + s), Match(s % 2), "chunnel-" + std::to_string(s), {}};
        for (size_t a = 0; a < alts; ++a) {
            std::string impl = "i" + std::to_string(a) + "-";
            impl.resize(name_len, 'a' + char(a % 26));
            slot.alts.push_back(Alt{uint8_t(a / 2), RunsAt(a % 3), impl});
        }
        o.slots.push_back(std::move(slot));
    }
    return o;
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];

    Offer small = offer(3, 3, 9);
    Pick pick{0x8000000000000001ull,
              {Choice{0x1000, "i0-aaaaaa", RunsAt::server, {0, 1, 2, 0xff}},
               Choice{0x1001, "v1", RunsAt::both, {}},
               Choice{0x1002, "cache-user", RunsAt::client, Bytes(64, 0xa5)}}};
    Refuse refuse{RefuseReason::no_compatible,
                  2,
                  0x1002,
                  "chunnel-2",
                  {"cache-xdp", "cache-user"},
                  {"cache-user-v2"},
                  "no implementation of chunnel-2 is accepted by both ends"};

    bool ok = seed("offer", Type::offer, encode(small)) &&
              seed("offer-empty", Type::offer, encode(Offer{})) &&
              seed("offer-split", Type::offer, encode(offer(4, 16, 40)), 0) &&
              seed("zero-rtt", Type::zero_rtt, encode(ZeroRtt{0xfeedfacecafebeefull, small})) &&
              seed("pick", Type::pick, encode(pick)) &&
              seed("pick-zero-rtt-refused", Type::pick, encode(pick), flag_zero_rtt_refused) &&
              seed("refuse", Type::refuse, encode(refuse)) &&
              seed("refuse-bare", Type::refuse,
                   encode(Refuse{RefuseReason::stack_mismatch, 0, 1, "a", {}, {}, {}})) &&
              seed("ack", Type::ack, encode(Ack{0xfeedfacecafebeefull}));
    if (!ok) return 1;
    std::printf("wire_corpus: %d seeds in %s\n", written, dir.c_str());
    return 0;
}
