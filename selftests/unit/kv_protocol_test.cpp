// The memcached text protocol over UDP (userspace/kv/protocol.*): every verb and reply, key
// bounds, malformed frames and commands answered in memcached's own words, build -> parse
// round trips, and a fixed-seed mutation loop that must never crash and must round-trip
// whatever it accepts.
#include "kv/protocol.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <random>
#include <string>
#include <vector>

using namespace bertha::kv;

namespace {

std::string frame(uint16_t id, std::string_view body, uint16_t seq = 0, uint16_t total = 1) {
    std::string out(kHeaderSize + body.size(), '\0');
    Writer w({out.data(), out.size()});
    put_frame_header(w, id, seq, total);
    w.put(body);
    REQUIRE(w.ok());
    return out;
}

Errc parse_error(std::string_view body) {
    auto r = parse_request(body);
    REQUIRE_MESSAGE(!r, "accepted: ", body);
    return r.error().code;
}

std::string reply_for(std::string_view body) {
    auto r = parse_request(body);
    REQUIRE(!r);
    std::vector<char> buf(512);
    Writer w(buf);
    put_error_reply(w, r.error());
    REQUIRE(w.ok());
    return std::string(w.view());
}

std::string build(const Request& r) {
    std::vector<char> buf(kMaxValue + 40000);
    Writer w(buf);
    auto ok = build_request(w, r);
    REQUIRE_MESSAGE(ok, (ok ? "" : std::string(ok.error().message)));
    REQUIRE(w.ok());
    return std::string(w.view());
}

std::string build(const Response& r) {
    std::vector<char> buf(kMaxValue + 40000);
    Writer w(buf);
    build_response(w, r);
    REQUIRE(w.ok());
    return std::string(w.view());
}

bool same(const Request& a, const Request& b) {
    if (a.verb != b.verb || a.nkeys != b.nkeys || a.noreply != b.noreply) return false;
    for (size_t i = 0; i < a.nkeys; ++i)
        if (a.keys[i] != b.keys[i]) return false;
    if (is_storage(a.verb)) return a.flags == b.flags && a.exptime == b.exptime && a.data == b.data;
    return true;
}

bool same(const Response& a, const Response& b) {
    if (a.status != b.status || a.message != b.message || a.nvalues != b.nvalues) return false;
    for (size_t i = 0; i < a.nvalues; ++i) {
        const Value &x = a.values[i], &y = b.values[i];
        if (x.key != y.key || x.flags != y.flags || x.data != y.data || x.has_cas != y.has_cas ||
            (x.has_cas && x.cas != y.cas))
            return false;
    }
    return true;
}

} // namespace

TEST_CASE("kv frame: header round trip, short datagrams refused, multi-packet described") {
    std::string d = frame(0xbeef, "get a\r\n");
    auto f = parse_frame(d);
    REQUIRE(f);
    CHECK(f->request_id == 0xbeef);
    CHECK(f->seq == 0);
    CHECK(f->total == 1);
    CHECK(f->reserved == 0);
    CHECK(f->body == "get a\r\n");
    CHECK(require_single(*f));
    // the wire order is big-endian, as memcached's
    CHECK((unsigned char)d[0] == 0xbe);
    CHECK((unsigned char)d[1] == 0xef);
    CHECK(d[5] == 1);

    for (size_t n = 0; n < kHeaderSize; ++n) {
        auto s = parse_frame(std::string_view(d).substr(0, n));
        REQUIRE(!s);
        CHECK(s.error().code == Errc::short_frame);
        CHECK(s.error().reply() == ErrorReply::none);
    }
    auto empty = parse_frame(std::string_view(d).substr(0, kHeaderSize));
    REQUIRE(empty);
    CHECK(empty->body.empty());

    for (auto [seq, total] : {std::pair{0, 2}, {1, 2}, {0, 0}, {1, 1}}) {
        auto m = parse_frame(frame(7, "get a\r\n", uint16_t(seq), uint16_t(total)));
        REQUIRE(m);
        auto single = require_single(*m);
        REQUIRE(!single);
        CHECK(single.error().code == Errc::multi_packet);
        std::vector<char> buf(128);
        Writer w(buf);
        put_error_reply(w, single.error());
        CHECK(w.view() == "SERVER_ERROR multi-packet request not supported\r\n");
    }
}

TEST_CASE("kv request: get and gets with one and many keys") {
    auto g = parse_request("get foo\r\n");
    REQUIRE(g);
    CHECK(g->verb == Verb::get);
    CHECK(g->nkeys == 1);
    CHECK(g->key() == "foo");
    CHECK(g->wire_size == 9);

    auto m = parse_request("gets a  bb   ccc\r\n");
    REQUIRE(m);
    CHECK(m->verb == Verb::gets);
    REQUIRE(m->nkeys == 3);
    CHECK(m->keys[0] == "a");
    CHECK(m->keys[1] == "bb");
    CHECK(m->keys[2] == "ccc");

    std::string many = "get";
    for (size_t i = 0; i < kMaxKeys; ++i) many += " k" + std::to_string(i);
    auto full = parse_request(many + "\r\n");
    REQUIRE(full);
    CHECK(full->nkeys == kMaxKeys);
    CHECK(parse_error(many + " one_more\r\n") == Errc::too_many_keys);

    CHECK(parse_error("get\r\n") == Errc::unknown_command);
    CHECK(parse_error("get   \r\n") == Errc::unknown_command);
    CHECK(reply_for("get\r\n") == "ERROR\r\n");
    // memcached takes a bare \n as a line end too
    auto bare = parse_request("get foo\n");
    REQUIRE(bare);
    CHECK(bare->key() == "foo");
    CHECK(bare->wire_size == 8);
}

TEST_CASE("kv request: set, add and replace with flags, exptime, data and noreply") {
    auto s = parse_request("set k 42 -1 5\r\nhello\r\n");
    REQUIRE(s);
    CHECK(s->verb == Verb::set);
    CHECK(s->key() == "k");
    CHECK(s->flags == 42);
    CHECK(s->exptime == -1);
    CHECK(s->data == "hello");
    CHECK(!s->noreply);
    CHECK(s->wire_size == 22);

    auto a = parse_request("add k 4294967295 2592000 0 noreply\r\n\r\n");
    REQUIRE(a);
    CHECK(a->verb == Verb::add);
    CHECK(a->flags == 4294967295u);
    CHECK(a->exptime == 2592000);
    CHECK(a->data.empty());
    CHECK(a->noreply);

    auto r = parse_request("replace k 0 0 4\r\na\r\nb\r\n");
    REQUIRE(r);
    CHECK(r->verb == Verb::replace);
    CHECK(r->data == "a\r\nb"); // data is binary: \r\n inside it is data

    // data longer or shorter than declared, or not followed by \r\n
    CHECK(parse_error("set k 0 0 5\r\nhel\r\n") == Errc::bad_data_chunk);
    CHECK(parse_error("set k 0 0 2\r\nhello\r\n") == Errc::bad_data_chunk);
    CHECK(parse_error("set k 0 0 5\r\nhello") == Errc::bad_data_chunk);
    CHECK(parse_error("set k 0 0 5\r\nhello\n") == Errc::bad_data_chunk);
    CHECK(parse_error("set k 0 0 5\r\nhello\r") == Errc::bad_data_chunk);
    CHECK(reply_for("set k 0 0 2\r\nhello\r\n") == "CLIENT_ERROR bad data chunk\r\n");
    // bad numbers and token counts
    CHECK(parse_error("set k x 0 1\r\na\r\n") == Errc::bad_command_line);
    CHECK(parse_error("set k 0 0 -1\r\n") == Errc::bad_command_line);
    CHECK(parse_error("set k -1 0 1\r\na\r\n") == Errc::bad_command_line);
    CHECK(parse_error("set k 4294967296 0 1\r\na\r\n") == Errc::bad_command_line);
    CHECK(parse_error("set k 0 2147483648 1\r\na\r\n") == Errc::bad_command_line);
    CHECK(parse_error("set k 0 0 +1\r\na\r\n") == Errc::bad_command_line);
    CHECK(parse_error("set k 0 0 1x\r\na\r\n") == Errc::bad_command_line);
    CHECK(reply_for("set k 0 0 zz\r\n") == "CLIENT_ERROR bad command line format\r\n");
    CHECK(parse_error("set k 0 0\r\n") == Errc::unknown_command);
    CHECK(parse_error("set k 0 0 1 noreply extra\r\na\r\n") == Errc::unknown_command);
    CHECK(reply_for("set k 0 0\r\n") == "ERROR\r\n");
    // too large for one response datagram
    CHECK(parse_error("set k 0 0 " + std::to_string(kMaxValue + 1) + "\r\n") == Errc::too_large);
    CHECK(reply_for("set k 0 0 99999999\r\n") == "SERVER_ERROR object too large for cache\r\n");
    // memcached ignores a fifth token that is not noreply
    auto odd = parse_request("set k 0 0 1 norep\r\na\r\n");
    REQUIRE(odd);
    CHECK(!odd->noreply);
}

TEST_CASE("kv request: delete with its optional 0 and noreply") {
    auto d = parse_request("delete k\r\n");
    REQUIRE(d);
    CHECK(d->verb == Verb::del);
    CHECK(d->key() == "k");
    CHECK(!d->noreply);
    CHECK(parse_request("delete k 0\r\n"));
    auto n = parse_request("delete k noreply\r\n");
    REQUIRE(n);
    CHECK(n->noreply);
    auto zn = parse_request("delete k 0 noreply\r\n");
    REQUIRE(zn);
    CHECK(zn->noreply);
    CHECK(parse_error("delete k 10\r\n") == Errc::bad_command_line);
    CHECK(reply_for("delete k 10\r\n") ==
          "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n");
    CHECK(parse_error("delete\r\n") == Errc::unknown_command);
    CHECK(parse_error("delete a b c d\r\n") == Errc::unknown_command);
}

TEST_CASE("kv request: keys of 1 and 250 bytes pass, 251 and control characters are refused") {
    std::string k250(250, 'k'), k251(251, 'k');
    for (auto verb : {"get ", "gets ", "delete "}) {
        std::string one_text = std::string(verb) + "x\r\n";
        std::string max_text = std::string(verb) + k250 + "\r\n";
        auto one = parse_request(one_text);
        REQUIRE(one);
        CHECK(one->key() == "x");
        auto max = parse_request(max_text);
        REQUIRE(max);
        CHECK(max->key().size() == 250);
        CHECK(parse_error(std::string(verb) + k251 + "\r\n") == Errc::key_too_long);
        CHECK(reply_for(std::string(verb) + k251 + "\r\n") ==
              "CLIENT_ERROR bad command line format\r\n");
    }
    std::string set_text = "set " + k250 + " 0 0 1\r\nv\r\n";
    auto s = parse_request(set_text);
    REQUIRE(s);
    CHECK(s->key() == k250);
    CHECK(parse_error("set " + k251 + " 0 0 1\r\nv\r\n") == Errc::key_too_long);
    CHECK(parse_error("get ok " + k251 + "\r\n") == Errc::key_too_long);
    CHECK(parse_error("get a\tb\r\n") == Errc::bad_key);
    CHECK(parse_error(std::string("get a\x01", 6) + "\r\n") == Errc::bad_key);
    CHECK(parse_error("get a\x7f\r\n") == Errc::bad_key);
    CHECK(parse_error("get a\rb\r\n") == Errc::bad_key);
    CHECK(check_key(k250));
    CHECK(!check_key(k251));
    CHECK(!check_key(""));
    CHECK(!check_key("a b"));
}

TEST_CASE("kv request: lines without an end, unknown commands, several commands in a datagram") {
    CHECK(parse_error("") == Errc::incomplete);
    CHECK(parse_error("get foo") == Errc::incomplete);
    CHECK(parse_error("get foo\r") == Errc::incomplete);
    CHECK(reply_for("get foo") == "CLIENT_ERROR bad command line format\r\n");
    CHECK(parse_error("\r\n") == Errc::unknown_command);
    CHECK(parse_error("GET foo\r\n") == Errc::unknown_command);
    CHECK(parse_error("incr a 1\r\n") == Errc::unknown_command);
    CHECK(parse_error("getx a\r\n") == Errc::unknown_command);

    std::string_view two = "set a 0 0 1\r\nx\r\nget a b\r\n";
    auto first = parse_request(two);
    REQUIRE(first);
    CHECK(first->verb == Verb::set);
    auto second = parse_request(two.substr(first->wire_size));
    REQUIRE(second);
    CHECK(second->verb == Verb::get);
    CHECK(second->nkeys == 2);
    CHECK(first->wire_size + second->wire_size == two.size());
}

// After an error memcached reads on from the next line, or past the data block it swallows;
// where it cannot (no line end, data missing), it stops.
TEST_CASE("kv request: errors say where memcached resynchronizes") {
    auto resume = [](std::string_view body) {
        auto r = parse_request(body);
        REQUIRE(!r);
        return r.error().resume;
    };
    CHECK(resume("bogus\r\nget a\r\n") == 7);
    CHECK(resume("get " + std::string(251, 'k') + "\r\nget a\r\n") == 257);
    CHECK(resume("set k zz 0 1\r\nx\r\n") == 14); // then "x" is a command: ERROR
    CHECK(resume("set " + std::string(251, 'k') + " 0 0 1\r\nx\r\n") == 263); // same
    CHECK(resume("set k 0 0 2\r\nabcd\r\n") == 17); // swallows "abcd", then "\r\n"
    CHECK(resume("set k 0 0 5\r\nab\r\n") == 0);    // the data is not all there
    CHECK(resume("set k 0 0 99999999\r\n") == 0);
    CHECK(resume("delete k 5\r\n") == 12);
    CHECK(resume("get a") == 0);
}

TEST_CASE("kv request: build -> parse round trips every verb, and build refuses bad requests") {
    std::string k250(250, 'z');
    std::vector<Request> reqs;
    Request g;
    g.verb = Verb::get;
    g.keys[0] = "a";
    g.keys[1] = k250;
    g.nkeys = 2;
    reqs.push_back(g);
    g.verb = Verb::gets;
    reqs.push_back(g);
    for (Verb v : {Verb::set, Verb::add, Verb::replace}) {
        Request s;
        s.verb = v;
        s.keys[0] = "key:1";
        s.nkeys = 1;
        s.flags = 7;
        s.exptime = -5;
        s.data = "va\r\nlue";
        reqs.push_back(s);
        s.noreply = true;
        s.data = "";
        reqs.push_back(s);
    }
    Request d;
    d.verb = Verb::del;
    d.keys[0] = "gone";
    d.nkeys = 1;
    reqs.push_back(d);
    d.noreply = true;
    reqs.push_back(d);
    for (const auto& r : reqs) {
        std::string wire = build(r);
        auto p = parse_request(wire);
        REQUIRE_MESSAGE(p, wire);
        CHECK_MESSAGE(same(r, *p), wire);
        CHECK(p->wire_size == wire.size());
    }
    CHECK(build(reqs[2]) == "set key:1 7 -5 7\r\nva\r\nlue\r\n");
    CHECK(build(reqs.back()) == "delete gone noreply\r\n");

    std::vector<char> buf(1024);
    Writer w(buf);
    Request bad;
    bad.verb = Verb::get;
    CHECK(!build_request(w, bad)); // no keys
    std::string k251(251, 'k');
    bad.keys[0] = k251;
    bad.nkeys = 1;
    CHECK(build_request(w, bad).error().code == Errc::key_too_long);
    bad.keys[0] = "a b";
    CHECK(build_request(w, bad).error().code == Errc::bad_key);
    CHECK(w.size() == 0);

    // a writer that runs out of room says so
    std::vector<char> tiny(10);
    Writer t(tiny);
    REQUIRE(build_request(t, reqs[2]));
    CHECK(!t.ok());
}

TEST_CASE("kv response: every reply builds and parses back") {
    std::vector<Response> rs;
    for (Status s : {Status::stored, Status::not_stored, Status::exists, Status::not_found,
                     Status::deleted, Status::error}) {
        Response r;
        r.status = s;
        rs.push_back(r);
    }
    Response ce;
    ce.status = Status::client_error;
    ce.message = "bad data chunk";
    rs.push_back(ce);
    Response se;
    se.status = Status::server_error;
    se.message = "object too large for cache";
    rs.push_back(se);
    Response miss; // a get of a missing key: just END
    rs.push_back(miss);
    Response hits;
    hits.values[0] = Value{"a", 0, "1", false, 0};
    hits.values[1] =
        Value{std::string_view("kkkk"), 4294967295u, "x\r\ny", true, 18446744073709551615u};
    hits.values[2] = Value{"e", 3, "", true, 1};
    hits.nvalues = 3;
    rs.push_back(hits);
    for (const auto& r : rs) {
        std::string wire = build(r);
        auto p = parse_response(wire);
        REQUIRE_MESSAGE(p, wire);
        CHECK_MESSAGE(same(r, *p), wire);
        CHECK(p->wire_size == wire.size());
    }
    CHECK(build(miss) == "END\r\n");
    CHECK(build(rs[1]) == "NOT_STORED\r\n");
    CHECK(build(ce) == "CLIENT_ERROR bad data chunk\r\n");
    CHECK(build(hits) ==
          "VALUE a 0 1\r\n1\r\nVALUE kkkk 4294967295 4 18446744073709551615\r\nx\r\ny\r\n"
          "VALUE e 3 0 1\r\n\r\nEND\r\n");
}

TEST_CASE("kv response: malformed responses are refused") {
    for (std::string_view bad : {
             "", "END", "END\n", "STORED\r", "STORED now\r\n", "WHAT\r\n",
             "VALUE a 0 3\r\nab\r\nEND\r\n",     // data shorter than declared
             "VALUE a 0 1\r\nab\r\nEND\r\n",     // longer
             "VALUE a 0 2\r\nab\r\n",            // no END
             "VALUE a 0 2\r\nab\r\nSTORED\r\n",  // not END after values
             "VALUE a x 2\r\nab\r\nEND\r\n",     // bad flags
             "VALUE a 0 2 z\r\nab\r\nEND\r\n",   // bad cas
             "VALUE a 0 2 1 9\r\nab\r\nEND\r\n", // extra token
             "VALUE  0 2\r\nab\r\nEND\r\n",      // no key
         }) {
        auto p = parse_response(bad);
        CHECK_MESSAGE(!p, bad);
        if (!p) CHECK(p.error().code == Errc::bad_response);
    }
}

// Valid requests and responses, mutated byte by byte with a fixed seed: the parser must never
// crash, its views must stay inside the input, and whatever it accepts must build and parse back
// equal.
TEST_CASE("kv protocol: 20000 mutated requests never crash and round-trip what is accepted") {
    const std::vector<std::string> seeds = {
        "get a\r\n",
        "get k1 k2 k3 k4\r\n",
        "gets " + std::string(250, 'q') + "\r\n",
        "set key 1 0 5\r\nhello\r\n",
        "add key 4294967295 -1 3 noreply\r\nabc\r\n",
        "replace r 0 100 0\r\n\r\n",
        "delete d\r\n",
        "delete d 0 noreply\r\n",
        "set a 0 0 1\r\nx\r\nget a\r\n",
        // responses
        "END\r\n",
        "STORED\r\n",
        "CLIENT_ERROR bad data chunk\r\n",
        "VALUE a 0 1\r\nx\r\nEND\r\n",
        "VALUE k1 5 3 77\r\nabc\r\nVALUE k2 0 0 78\r\n\r\nEND\r\n",
    };
    const std::string alphabet = " \r\n0123456789-abcdefgnoreplyVALUE\t\x01\x7f";
    std::mt19937 rng(20261129);
    size_t accepted = 0, refused = 0, resp_accepted = 0;
    for (int i = 0; i < 20000; ++i) {
        std::string s = seeds[rng() % seeds.size()];
        int edits = 1 + int(rng() % 4);
        for (int e = 0; e < edits; ++e) {
            size_t pos = s.empty() ? 0 : rng() % (s.size() + 1);
            switch (rng() % 5) {
            case 0: // replace a byte
                if (pos < s.size()) s[pos] = alphabet[rng() % alphabet.size()];
                break;
            case 1:
                s.insert(pos, 1, alphabet[rng() % alphabet.size()]);
                break;
            case 2:
                if (pos < s.size()) s.erase(pos, 1);
                break;
            case 3:
                s.resize(pos);
                break; // truncate
            case 4:    // flip a bit
                if (pos < s.size()) s[pos] = char(s[pos] ^ (1 << (rng() % 8)));
                break;
            }
            if (s.empty()) s = "x";
        }
        // the input lives in its own exact-size buffer, so views past it would be caught by
        // the range checks below (and by ASan in a sanitizer build)
        std::vector<char> input(s.begin(), s.end());
        std::string_view in(input.data(), input.size());
        auto r = parse_request(in);
        if (!r) {
            ++refused;
            REQUIRE(r.error().resume <= in.size());
            REQUIRE(!to_string(r.error().code).empty());
        } else {
            ++accepted;
            REQUIRE(r->wire_size <= in.size());
            REQUIRE(r->nkeys >= 1);
            for (auto k : r->key_list()) {
                REQUIRE(k.data() >= in.data());
                REQUIRE(k.data() + k.size() <= in.data() + in.size());
            }
            std::string wire = build(*r);
            auto back = parse_request(wire);
            REQUIRE_MESSAGE(back, wire);
            REQUIRE_MESSAGE(same(*r, *back), wire);
        }
        // the same bytes as a response: must not crash; what parses must round-trip
        auto resp = parse_response(in);
        if (resp) {
            ++resp_accepted;
            REQUIRE(resp->wire_size <= in.size());
            std::string wire = build(*resp);
            auto back = parse_response(wire);
            REQUIRE_MESSAGE(back, wire);
            REQUIRE(same(*resp, *back));
        }
    }
    MESSAGE("accepted ", accepted, ", refused ", refused, ", as responses ", resp_accepted);
    CHECK(accepted > 1000); // the loop exercised both sides
    CHECK(refused > 1000);
}
