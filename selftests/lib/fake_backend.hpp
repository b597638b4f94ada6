// A stand-in for the loader behind OffloadBackend (bertha/offload.hpp), for tests that attach
// offloads without interfaces or BPF: it keeps references per flow as the loader does, records
// the last flow and stages, and can be told to refuse.
#pragma once

#include "bertha/offload.hpp"

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace bertha::test {

// Stands in for the loader: keeps references per flow like the loader does, and can be told to
// refuse.
class FakeBackend : public OffloadBackend {
  public:
    std::string_view name() const noexcept override { return "fake backend"; }
    Result<uint32_t> attach(const load::FlowKey& key,
                            std::span<const load::StageSpec> stages) override {
        std::lock_guard g(mu);
        ++attaches;
        if (refuse_attach) return fail(Errc::unavailable, "flow " + key.text(), "refused by test");
        last = key;
        last_stages.assign(stages.begin(), stages.end());
        auto& r = refs[key.text()];
        if (r.second == 0) r.first = next_chain++;
        ++r.second;
        return r.first;
    }
    Result<void> detach(const load::FlowKey& key) override {
        std::lock_guard g(mu);
        ++detaches;
        if (refuse_detach) return fail(Errc::system, "flow " + key.text(), "refused by test");
        auto it = refs.find(key.text());
        if (it == refs.end()) return fail(Errc::invalid_argument, key.text(), "not attached");
        if (--it->second.second == 0) refs.erase(it);
        return {};
    }
    Result<std::vector<load::StageStats>> stats(std::string_view) override {
        return fail(Errc::unavailable, "fake", "no counters");
    }
    Result<void> set_xsk(const load::FlowKey&, uint32_t, int) override {
        return fail(Errc::unavailable, "fake", "no AF_XDP sockets");
    }
    uint32_t refs_of(const std::string& key) {
        std::lock_guard g(mu);
        auto it = refs.find(key);
        return it == refs.end() ? 0 : it->second.second;
    }
    size_t flows() {
        std::lock_guard g(mu);
        return refs.size();
    }

    std::mutex mu;
    std::map<std::string, std::pair<uint32_t, uint32_t>> refs; // key -> (chain, references)
    uint32_t next_chain = 0;
    int attaches = 0, detaches = 0;
    bool refuse_attach = false, refuse_detach = false;
    load::FlowKey last;
    std::vector<load::StageSpec> last_stages;
};

// Installs a backend for the process for the length of a test.
struct UseBackend {
    explicit UseBackend(std::shared_ptr<OffloadBackend> b) { set_offload_backend(std::move(b)); }
    ~UseBackend() { set_offload_backend(nullptr); }
};

} // namespace bertha::test
