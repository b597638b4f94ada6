#include "bertha/offload.hpp"

#include "bertha/discovery.hpp"
#include "bertha/log.hpp"
#include "loader/agent.hpp"

#include <cstdlib>
#include <map>
#include <mutex>
#include <utility>

namespace bertha {

namespace {

constexpr std::string_view kComponent = "offload";

std::string stages_text(std::span<const load::StageSpec> stages) {
    std::string s;
    for (auto& st : stages) s += (s.empty() ? "" : " -> ") + st.text();
    return s.empty() ? std::string("(no stages)") : s;
}

// In-process: this process may load BPF itself.
class LoaderBackend final : public OffloadBackend {
  public:
    explicit LoaderBackend(load::Loader l) : loader_(std::move(l)) {}
    std::string_view name() const noexcept override { return "in-process loader"; }
    Result<uint32_t> attach(const load::FlowKey& key,
                            std::span<const load::StageSpec> stages) override {
        return loader_.attach(key, stages);
    }
    Result<void> detach(const load::FlowKey& key) override { return loader_.detach(key); }
    Result<std::vector<load::StageStats>> stats(std::string_view ifname) override {
        return loader_.stats(ifname);
    }
    Result<void> set_xsk(const load::FlowKey& key, uint32_t queue, int fd) override {
        return fd >= 0 ? loader_.set_xsk(key, queue, fd) : loader_.clear_xsk(key, queue);
    }

  private:
    load::Loader loader_; // serializes its own calls
};

// Through the agent, over one connection for the whole process. The agent holds our references
// for as long as that connection is open: if it closes (the agent restarted), the references
// are gone with it, the next attach connects again, and handles from before detach nothing
// (they would otherwise drop references that are not theirs).
class AgentBackend final : public OffloadBackend {
  public:
    AgentBackend(std::string path, load::AgentClient c)
        : path_(std::move(path)), name_("agent at " + path_), client_(std::move(c)) {}
    std::string_view name() const noexcept override { return name_; }

    Result<uint32_t> attach(const load::FlowKey& key,
                            std::span<const load::StageSpec> stages) override {
        std::lock_guard g(mu_); // one request and its reply at a time on the connection
        auto r = client_->attach(key, stages);
        if (!r && r.error().code == Errc::closed) {
            log(LogLevel::info, kComponent,
                name_ + " closed the connection (its references to our flows are gone); "
                        "connecting again");
            refs_.clear();
            auto c = load::AgentClient::connect(path_);
            if (!c) return std::unexpected(c.error());
            client_.emplace(std::move(*c));
            r = client_->attach(key, stages);
        }
        if (r) ++refs_[key.text()];
        return r;
    }
    Result<void> detach(const load::FlowKey& key) override {
        std::lock_guard g(mu_);
        auto it = refs_.find(key.text());
        if (it == refs_.end()) {
            log(LogLevel::debug, kComponent,
                key.text() + ": attached on an earlier connection to the agent, which dropped "
                             "the reference when it closed");
            return {};
        }
        if (--it->second == 0) refs_.erase(it);
        return client_->detach(key);
    }
    Result<std::vector<load::StageStats>> stats(std::string_view) override {
        return fail(Errc::unavailable, name_,
                    "the agent does not serve counters; read them with `bertha-load stats`");
    }
    Result<void> set_xsk(const load::FlowKey& key, uint32_t, int) override {
        return fail(Errc::unavailable, name_,
                    key.text() + ": the agent cannot take an AF_XDP socket from another process "
                                 "(it would need SCM_RIGHTS); AF_XDP needs an in-process loader");
    }

  private:
    std::mutex mu_;
    std::string path_, name_;
    std::optional<load::AgentClient> client_;
    std::map<std::string, uint32_t> refs_; // flow -> references taken on this connection
};

struct Global {
    std::mutex mu;
    std::shared_ptr<OffloadBackend> backend;
};
Global& global() {
    static Global g;
    return g;
}

std::string agent_socket() {
    const char* env = std::getenv("BERTHA_AGENT_SOCKET");
    return env && *env ? std::string(env) : std::string(kAgentSocket);
}

Result<std::shared_ptr<OffloadBackend>> make_backend() {
    const ProbeReport& host = probe();
    if (host.privileged) {
        auto l = load::Loader::open();
        if (!l)
            return fail(l.error().code, std::string(kComponent),
                        "this process is privileged (" + host.privileged.why +
                            ") but cannot open the loader: " + l.error().what());
        log(LogLevel::debug, kComponent,
            "offloads attach in-process (" + host.privileged.why + "), pins under " + l->root());
        return std::make_shared<LoaderBackend>(std::move(*l));
    }
    std::string path = agent_socket();
    auto c = load::AgentClient::connect(path);
    if (!c)
        return fail(c.error().code, std::string(kComponent),
                    "this process may not load BPF (" + host.privileged.why +
                        ") and the loader agent is not reachable: " + c.error().what());
    log(LogLevel::debug, kComponent,
        "offloads attach through the agent at " + path + " (" + host.privileged.why + ")");
    return std::make_shared<AgentBackend>(path, std::move(*c));
}

} // namespace

Result<OffloadFlow> OffloadFlow::of(const ConnectContext& ctx, load::Hook hook,
                                    std::string chunnel) {
    OffloadFlow f;
    f.chunnel = std::move(chunnel);
    f.hook = hook;
    f.ifname = ctx.flow.ifname;
    f.port = ctx.flow.local.empty() ? 0 : ctx.flow.local.port();
    if (!ctx.flow.peer.empty()) f.peer = ctx.flow.peer;
    f.redirect_chain = ctx.flow.redirect_chain;
    std::string missing;
    if (f.ifname.empty())
        missing = "the interface it runs on (" +
                  std::string(ctx.flow.peer.empty() ? "bound to a wildcard or unknown address"
                                                    : "no route to " + ctx.flow.peer.to_string()) +
                  ")";
    if (f.port == 0) missing += (missing.empty() ? "" : " and ") + std::string("its local port");
    if (!missing.empty())
        return fail(Errc::unavailable, f.chunnel,
                    "cannot attach the offload: the connection's flow lacks " + missing);
    return f;
}

load::FlowKey OffloadFlow::key() const {
    return load::FlowKey{ifname, hook, port, peer};
}

std::string OffloadFlow::text() const {
    return (chunnel.empty() ? std::string("offload") : chunnel) + " on " + key().text();
}

std::shared_ptr<OffloadBackend> in_process_backend(load::Loader loader) {
    return std::make_shared<LoaderBackend>(std::move(loader));
}

Result<std::shared_ptr<OffloadBackend>> offload_backend() {
    Global& g = global();
    std::lock_guard lock(g.mu);
    if (!g.backend) {
        auto b = make_backend();
        if (!b) return std::unexpected(b.error()); // not cached: the agent may come up later
        g.backend = std::move(*b);
    }
    return g.backend;
}

void set_offload_backend(std::shared_ptr<OffloadBackend> backend) {
    Global& g = global();
    std::lock_guard lock(g.mu);
    g.backend = std::move(backend);
}

OffloadHandle::OffloadHandle(std::shared_ptr<OffloadBackend> backend, OffloadFlow flow,
                             uint32_t chain)
    : backend_(std::move(backend)), flow_(std::move(flow)), chain_(chain) {}

OffloadHandle::OffloadHandle(OffloadHandle&& o) noexcept
    : backend_(std::move(o.backend_)), flow_(std::move(o.flow_)), chain_(o.chain_) {
    o.backend_.reset();
}

OffloadHandle& OffloadHandle::operator=(OffloadHandle&& o) noexcept {
    if (this != &o) {
        reset();
        backend_ = std::move(o.backend_);
        o.backend_.reset();
        flow_ = std::move(o.flow_);
        chain_ = o.chain_;
    }
    return *this;
}

OffloadHandle::~OffloadHandle() {
    reset();
}

std::string_view OffloadHandle::path() const noexcept {
    return backend_ ? backend_->name() : std::string_view{};
}

Result<void> OffloadHandle::release() {
    if (!backend_) return {};
    auto backend = std::move(backend_);
    backend_.reset();
    auto r = backend->detach(flow_.key());
    if (!r)
        return fail(r.error().code, flow_.chunnel.empty() ? std::string(kComponent) : flow_.chunnel,
                    "detach chain " + std::to_string(chain_) + " of " + flow_.key().text() +
                        " through the " + std::string(backend->name()) + ": " + r.error().what());
    log(LogLevel::debug, kComponent,
        flow_.text() + ": dropped a reference on chain " + std::to_string(chain_) + " (" +
            std::string(backend->name()) + ")");
    return {};
}

void OffloadHandle::reset() noexcept {
    if (!backend_) return;
    try {
        if (auto r = release(); !r) log(LogLevel::warn, kComponent, r.error().what());
    } catch (...) { // a destructor carries on whatever happens (allocation failure)
        backend_.reset();
    }
}

Result<void> OffloadHandle::set_xsk(uint32_t queue, int fd) const {
    if (!backend_) return fail(Errc::closed, std::string(kComponent), "no offload is attached");
    return backend_->set_xsk(flow_.key(), queue, fd);
}

Result<std::vector<load::StageStats>> OffloadHandle::stats() const {
    if (!backend_) return fail(Errc::closed, std::string(kComponent), "no offload is attached");
    auto all = backend_->stats(flow_.ifname);
    if (!all) return std::unexpected(all.error());
    std::vector<load::StageStats> mine;
    for (auto& s : *all)
        if (s.chain == chain_ && s.hook == flow_.hook) mine.push_back(std::move(s));
    if (mine.empty())
        return fail(Errc::unavailable, flow_.chunnel,
                    "chain " + std::to_string(chain_) + " of " + flow_.key().text() +
                        " is no longer attached");
    return mine;
}

Result<OffloadHandle> attach_offload(std::shared_ptr<OffloadBackend> backend,
                                     const OffloadFlow& flow,
                                     std::span<const load::StageSpec> stages) {
    const std::string who = flow.chunnel.empty() ? std::string(kComponent) : flow.chunnel;
    if (!backend) return fail(Errc::invalid_argument, who, "no offload backend");
    std::vector<load::StageSpec> with_tail;
    if (flow.redirect_chain && flow.hook == load::Hook::xdp) {
        // The flow's packets belong to the base's AF_XDP sockets: the chain ends in them.
        with_tail.assign(stages.begin(), stages.end());
        with_tail.push_back({"xsk", "sockets=" + std::to_string(*flow.redirect_chain)});
        stages = with_tail;
    }
    auto chain = backend->attach(flow.key(), stages);
    if (!chain)
        return fail(chain.error().code, who,
                    "attach " + stages_text(stages) + " for " + flow.key().text() +
                        " through the " + std::string(backend->name()) + ": " +
                        chain.error().what());
    log(LogLevel::debug, kComponent,
        flow.text() + ": attached " + stages_text(stages) + " as chain " + std::to_string(*chain) +
            " through the " + std::string(backend->name()));
    return OffloadHandle(std::move(backend), flow, *chain);
}

Result<OffloadHandle> attach_offload(const OffloadFlow& flow,
                                     std::span<const load::StageSpec> stages) {
    auto backend = offload_backend();
    if (!backend)
        return fail(backend.error().code, flow.chunnel.empty() ? "offload" : flow.chunnel,
                    "cannot attach " + stages_text(stages) + " for " + flow.key().text() + ": " +
                        backend.error().what());
    return attach_offload(std::move(*backend), flow, stages);
}

} // namespace bertha
