// echo: a UDP echo server and a closed-loop client over a stack of noop chunnels, to see what a
// Bertha stack costs and how it is used. The command line only; the roles are in server.cpp
// and client.cpp.
#include "echo.hpp"

#include <CLI/CLI.hpp>
#include <map>
#include <string>

int main(int argc, char** argv) {
    using namespace bertha::echo;
    CLI::App app{"Bertha echo example: a server that echoes UDP messages back through a stack of "
                 "chunnels, and a client that measures the round trips."};
    app.require_subcommand(1);

    // --base: which base chunnel carries the datagrams (the wire is UDP either way).
    const std::map<std::string, Base> bases{
        {"udp", Base::udp}, {"xsk", Base::xsk}, {"auto", Base::automatic}};
    const char* base_help = "udp (io_uring), xsk (AF_XDP kernel bypass; an error if it cannot "
                            "run), or auto (xsk where it can run, else udp)";

    ServerOptions so;
    auto* server = app.add_subcommand("server", "echo every message back to its sender");
    server->add_option("--bind", so.bind, "local address, e.g. 198.18.0.1:7000")->required();
    server->add_option("--noops", so.noops, "noop chunnels stacked over the base")
        ->check(CLI::Range(size_t(0), kMaxNoops))
        ->capture_default_str();
    server->add_option("--base", so.base, base_help)
        ->transform(CLI::CheckedTransformer(bases, CLI::ignore_case))
        ->default_str("udp");
    server->add_option("--duration-s", so.duration_s, "stop after this many seconds (0: never)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();

    ClientOptions co;
    auto* client = app.add_subcommand("client", "send messages, check the echoes, time them");
    client->add_option("--server", co.server, "server address, e.g. 198.18.0.1:7000")->required();
    client->add_option("--noops", co.noops, "noop chunnels stacked over the base")
        ->check(CLI::Range(size_t(0), kMaxNoops))
        ->capture_default_str();
    client->add_option("--base", co.base, base_help)
        ->transform(CLI::CheckedTransformer(bases, CLI::ignore_case))
        ->default_str("udp");
    client->add_option("--count", co.count, "messages to send")
        ->check(CLI::Range(uint64_t(1), uint64_t(1) << 40))
        ->capture_default_str();
    client->add_option("--size", co.size, "bytes per message")
        ->check(CLI::Range(size_t(16), kMaxSize))
        ->capture_default_str();
    client->add_option("--window", co.window, "messages in flight")
        ->check(CLI::Range(size_t(1), size_t(4096)))
        ->capture_default_str();
    client->add_option("--max-seconds", co.max_seconds, "stop the run after this long")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    client->add_option("--timeout-ms", co.timeout_ms, "count a message lost after this long")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    client->add_flag("--progress", co.progress, "print a progress line to stderr every 0.5 s");
    client->add_flag("--json", co.json, "print the result as one JSON object");

    CLI11_PARSE(app, argc, argv);
    if (server->parsed()) return run_server(so);
    return run_client(co);
}
