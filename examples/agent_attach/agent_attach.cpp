// agent_attach: an unprivileged application's side of the agent, in one small program. It asks
// `bertha-load serve` (through bertha::load::AgentClient) to attach one flow's chain of stages,
// prints the chain id, and holds the flow until SIGTERM or SIGINT, or until its stdin reaches end
// of file. It then exits without detaching: the agent's release of a closed connection's
// references is what removes the flow (selftests/net/loader_agent_test.sh checks exactly that).
//
//   agent_attach --socket /run/bertha/agent.sock --iface veth0 --port 7000 --stage count </fifo
//
// Prints "attached chain N for <flow>" once the agent said yes. Exit status: 0 the flow was
// held until told to stop, 1 the agent refused it or could not be reached, 2 bad arguments.
// stdin must stay open for as long as the flow is wanted (a pipe or a fifo; </dev/null ends the
// hold at once), unless --ignore-stdin.
#include "loader/agent.hpp"

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <poll.h>
#include <unistd.h>

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

// No SA_RESTART: poll() returns EINTR and the loop looks at the flag.
void stop_on_signals() {
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
}

// Until a signal, or (when watched) end of file on stdin. Whatever stdin carries is discarded.
void hold(bool watch_stdin) {
    char buf[256];
    while (!g_stop.load()) {
        pollfd p{STDIN_FILENO, POLLIN, 0};
        int n = ::poll(&p, watch_stdin ? 1 : 0, 200);
        if (n < 0 && errno != EINTR) return;
        if (n <= 0 || !watch_stdin) continue;
        ssize_t got = ::read(STDIN_FILENO, buf, sizeof buf);
        if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) return;
    }
}

} // namespace

int main(int argc, char** argv) {
    namespace load = bertha::load;
    CLI::App app{"Attach one flow's offload chain through the Bertha agent and hold it until "
                 "SIGTERM or end of file on stdin; the agent releases it when this exits."};
    std::string socket, iface, hook = "xdp", peer;
    int port = 0;
    bool ignore_stdin = false;
    std::vector<std::string> stages;
    app.add_option("--socket", socket, "The agent's socket (default: $BERTHA_AGENT_SOCKET, else "
                                       "/run/bertha/agent.sock)");
    app.add_option("--iface", iface, "Interface (as the agent sees it)")->required();
    app.add_option("--port", port, "The flow's local UDP port")
        ->required()
        ->check(CLI::Range(1, 65535));
    app.add_option("--hook", hook, "xdp (default) or tc-egress")
        ->check(CLI::IsMember({"xdp", "tc-egress"}));
    app.add_option("--peer", peer, "Only this peer's packets: ADDR:PORT (port 0: any port)");
    app.add_option("--stage", stages, "A stage, NAME[:key=val,...]; repeat in chain order")
        ->required();
    app.add_flag("--ignore-stdin", ignore_stdin, "Hold until a signal only");
    CLI11_PARSE(app, argc, argv);

    load::FlowKey key{iface, hook == "tc-egress" ? load::Hook::tc_egress : load::Hook::xdp,
                      uint16_t(port), std::nullopt};
    if (!peer.empty()) {
        auto a = bertha::Addr::parse(peer);
        if (!a) {
            std::fprintf(stderr, "agent_attach: %s\n", a.error().what().c_str());
            return 2;
        }
        key.peer = *a;
    }
    std::vector<load::StageSpec> specs;
    for (auto& s : stages) {
        auto spec = load::StageSpec::parse(s);
        if (!spec) {
            std::fprintf(stderr, "agent_attach: %s\n", spec.error().what().c_str());
            return 2;
        }
        specs.push_back(std::move(*spec));
    }
    stop_on_signals(); // before connecting: a SIGTERM from now on ends the hold, not the process

    auto client = load::AgentClient::connect(socket);
    if (!client) {
        std::fprintf(stderr, "agent_attach: %s\n", client.error().what().c_str());
        return 1;
    }
    auto chain = client->attach(key, specs);
    if (!chain) {
        std::fprintf(stderr, "agent_attach: %s\n", chain.error().what().c_str());
        return 1;
    }
    std::printf("attached chain %u for %s\n", *chain, key.text().c_str());
    std::fflush(stdout);
    hold(!ignore_stdin);
    std::printf("exiting; the agent releases chain %u when this connection closes\n", *chain);
    return 0;
}
