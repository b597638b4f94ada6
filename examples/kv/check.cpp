// `kv check` (check.hpp): each case states memcached's behaviour and checks it on the server.
#include "check.hpp"

#include "client.hpp"

#include <chrono>
#include <cstdio>
#include <unistd.h>

namespace bertha::kv {

int run_check(const CheckOptions& o) {
    auto addr = Addr::parse(o.server);
    if (!addr) {
        std::fprintf(stderr, "kv check: %s\n", addr.error().what().c_str());
        return 2;
    }
    auto c = KvClient::open(*addr, ClientOptions{std::chrono::milliseconds(o.timeout_ms), o.shard});
    if (!c) {
        std::fprintf(stderr, "kv check: %s\n", c.error().what().c_str());
        return 2;
    }
    if (o.shard != ShardPref::none) std::printf("kv check: via %s\n", c->via().c_str());
    const std::string p =
        !o.prefix.empty()
            ? o.prefix
            : "chk" + std::to_string(::getpid()) + "." +
                  std::to_string(std::chrono::steady_clock::now().time_since_epoch().count() %
                                 1000000) +
                  ".";
    int passed = 0, failed = 0;
    auto check = [&](const char* name, bool ok, const std::string& detail = {}) {
        std::printf("%s  %s%s%s\n", ok ? "ok  " : "FAIL", name, ok || detail.empty() ? "" : ": ",
                    ok ? "" : detail.c_str());
        (ok ? passed : failed)++;
    };
    auto err = [](const auto& r) { return r ? std::string() : r.error().what(); };
    auto status = [](const Result<Status>& r) {
        return r ? std::string(to_string(*r)) : r.error().what();
    };
    auto raw = [&](std::string_view body, size_t replies = 1) {
        auto r = c->call(body, replies);
        return r ? *r : "<" + r.error().what() + ">";
    };

    const std::string a = p + "a", b = p + "b", m = p + "missing";
    {
        auto g = c->get(m);
        check("get of a missing key finds nothing", g && !*g, err(g));
        check("...and the reply is just END", raw("get " + m + "\r\n") == "END\r\n");
    }
    {
        auto s = c->set(a, "hello", 42);
        check("set answers STORED", s && *s == Status::stored, status(s));
        auto g = c->get(a);
        check("get returns the value and flags set stored",
              g && *g && (*g)->data == "hello" && (*g)->flags == 42 && !(*g)->has_cas, err(g));
        auto s2 = c->set(a, "again");
        auto g2 = c->get(a);
        check("set overwrites", s2 && *s2 == Status::stored && g2 && *g2 &&
                                    (*g2)->data == "again" && (*g2)->flags == 0);
    }
    {
        auto ad = c->store(Verb::add, a, "x");
        check("add of an existing key answers NOT_STORED", ad && *ad == Status::not_stored,
              status(ad));
        auto g = c->get(a);
        check("...and leaves the value", g && *g && (*g)->data == "again");
        auto ad2 = c->store(Verb::add, b, "bee", 7);
        check("add of a new key answers STORED", ad2 && *ad2 == Status::stored, status(ad2));
    }
    {
        auto rp = c->store(Verb::replace, m, "x");
        check("replace of a missing key answers NOT_STORED", rp && *rp == Status::not_stored,
              status(rp));
        auto g = c->get(m);
        check("...and stores nothing", g && !*g);
        auto rp2 = c->store(Verb::replace, a, "new");
        auto g2 = c->get(a);
        check("replace of an existing key answers STORED and replaces",
              rp2 && *rp2 == Status::stored && g2 && *g2 && (*g2)->data == "new", status(rp2));
    }
    {
        std::string_view keys[] = {a, m, b};
        auto g = c->get(keys);
        check("multi-get returns the present keys in order, with their flags",
              g && g->size() == 2 && (*g)[0].key == a && (*g)[0].data == "new" &&
                  (*g)[1].key == b && (*g)[1].data == "bee" && (*g)[1].flags == 7,
              err(g));
        auto gs = c->get(keys, true);
        check("gets adds a cas to every item",
              gs && gs->size() == 2 && (*gs)[0].has_cas && (*gs)[1].has_cas &&
                  (*gs)[0].cas != (*gs)[1].cas,
              err(gs));
        auto before = c->get(a, true);
        (void)c->set(a, "newer");
        auto after = c->get(a, true);
        check("a store changes the cas",
              before && *before && after && *after && (*before)->cas != (*after)->cas);
    }
    {
        auto d = c->del(b);
        check("delete of an existing key answers DELETED", d && *d == Status::deleted, status(d));
        auto g = c->get(b);
        check("...and the key is gone", g && !*g);
        auto d2 = c->del(b);
        check("delete of a missing key answers NOT_FOUND", d2 && *d2 == Status::not_found,
              status(d2));
    }
    {
        std::string k250 = p + std::string(250 - p.size(), 'k');
        auto s = c->set(k250, "long");
        auto g = c->get(k250);
        check("a 250-byte key works", s && *s == Status::stored && g && *g && (*g)->data == "long",
              status(s));
        std::string k251 = k250 + "k";
        check("a 251-byte key gets CLIENT_ERROR bad command line format",
              raw("get " + k251 + "\r\n") == "CLIENT_ERROR bad command line format\r\n",
              raw("get " + k251 + "\r\n"));
        std::string r = raw("set " + k251 + " 0 0 1\r\nx\r\n", 2);
        check("a set with a 251-byte key gets CLIENT_ERROR bad command line format (then ERROR "
              "for the data line)",
              r == "CLIENT_ERROR bad command line format\r\nERROR\r\n", r);
        std::string one = "x";
        auto s1 = c->set(one, "1");
        auto g1 = c->get(one);
        check("a 1-byte key works", s1 && g1 && *g1 && (*g1)->data == "1");
    }
    {
        std::string bin = std::string("a\r\nb\0c", 6) + "\r\nEND\r\n";
        auto s = c->set(a, bin);
        auto g = c->get(a);
        check("values are binary: \\r\\n, NUL and END inside survive",
              s && g && *g && (*g)->data == bin);
        auto e = c->set(a, "");
        auto ge = c->get(a);
        check("an empty value is stored and returned", e && ge && *ge && (*ge)->data.empty());
        auto x = c->set(b, "gone", 0, -1);
        auto gx = c->get(b);
        check("a negative exptime stores (STORED) an already expired item",
              x && *x == Status::stored && gx && !*gx, status(x));
    }
    {
        check("an unknown command gets ERROR", raw("bogus " + a + "\r\n") == "ERROR\r\n",
              raw("bogus\r\n"));
        check("get without a key gets ERROR", raw("get\r\n") == "ERROR\r\n");
        std::string r = raw("set " + a + " 0 0 2\r\nabcd\r\n", 2);
        check("data longer than declared gets CLIENT_ERROR bad data chunk (then ERROR for the "
              "rest of the line)",
              r == "CLIENT_ERROR bad data chunk\r\nERROR\r\n", r);
        r = raw("set " + a + " zz 0 1\r\nx\r\n", 2);
        check("a bad number gets CLIENT_ERROR bad command line format (then ERROR for the data "
              "line)",
              r == "CLIENT_ERROR bad command line format\r\nERROR\r\n", r);
        r = raw("delete " + a + " 10\r\n");
        check("delete with a time gets memcached's usage line",
              r == "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n", r);
        r = raw("set " + a + " 3 0 1 noreply\r\nz\r\nget " + a + "\r\n");
        check("noreply: only the get in the same datagram answers",
              r == "VALUE " + a + " 3 1\r\nz\r\nEND\r\n", r);
        r = raw("delete " + a + " noreply\r\n", 0);
        auto g = c->get(a);
        check("delete noreply answers nothing and deletes", r.empty() && g && !*g, r);
        r = raw("set " + a + " 0 0 1\r\n1\r\nadd " + a + " 0 0 1\r\n2\r\nget " + a + "\r\n", 3);
        check("several commands in one datagram answer in order",
              r == "STORED\r\nNOT_STORED\r\nVALUE " + a + " 0 1\r\n1\r\nEND\r\n", r);
    }
    std::printf("kv check %s: %d passed, %d failed (%lu stale replies)\n", o.server.c_str(), passed,
                failed, (unsigned long)c->stale_replies());
    return failed == 0 ? 0 : 1;
}

} // namespace bertha::kv
