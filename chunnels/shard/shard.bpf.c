// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* shard: steer a key-value request straight to its shard's socket. The service (memcached text
 * protocol over UDP, bertha/kv.h) has `shard_count` shards, shard i on UDP port shard_base + i.
 * For a request datagram of the flow the stage reads the command line, finds the key (every key
 * of a get/gets), and rewrites the UDP destination port to that key's shard's port, fixing the
 * UDP checksum incrementally (counted `hit`). Anything it cannot decide — another verb, a
 * malformed or over-long line, a key over 250 bytes, a multi-get whose keys live on different
 * shards, a multi-datagram message, more than one command in the datagram, negotiation — goes on
 * untouched (counted `pass`), for the userspace proxy. A configuration it cannot use is counted
 * `error` (and the packet goes on untouched). Either way the packet then goes to the next stage.
 *
 * The decision is exactly that of chunnels/shard/steer.hpp (the C++ reference the selftests
 * check it against, and the proxy's own): see chunnels/shard/README.md for the grammar. */
#include "bertha/csum.h"
#include "bertha/kv.h"
#include "bertha/stage.h"
#include "shard_wire.h"

#include <bpf/bpf_helpers.h>

/* Written by the loader from `shards=N,base=P` (loader/stages.cpp validates them). */
const volatile __u32 shard_count = 0;
const volatile __u32 shard_base = 0;

#define SHARD_NONE 0xffffffffu
#define SHARD_BUF (BERTHA_MC_UDP_HDR + BERTHA_SHARD_LINE_MAX)

/* The parser's state lives in a map value, not in registers or on the stack: every load is then
 * an unknown scalar to the verifier, so the paths through one byte's step join again and the
 * loop costs it one pass per byte instead of one per combination of token counts. The frame
 * header and the start of the payload are copied here once (bpf_xdp_load_bytes). */
struct shard_work {
	__u32 tok;   /* tokens finished; the verb is token 0 */
	__u32 tlen;  /* bytes of the token being read */
	__u32 verb;  /* enum bertha_shard_verb, once token 0 is finished */
	__u32 hash;  /* FNV-1a of the key being read */
	__u32 shard; /* the first key's shard, or SHARD_NONE */
	__u32 bytes; /* a storage command's <bytes> argument */
	__u32 in_key; /* the token being read (or the next one) is a key */
	__u32 pad;
	__u64 word;  /* the verb's bytes, big-endian */
	__u8 buf[SHARD_BUF + 1]; /* +1: the byte after a '\r' is read with a constant bound */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct shard_work);
} shard_work SEC(".maps");

/* Every access to the state goes to memory (volatile): clang would otherwise keep it in registers,
 * where the verifier tracks exact values and walks each combination separately. */
#define LD(field) (*(volatile __typeof__(w->field) *)&w->field)
#define ST(field, v) (*(volatile __typeof__(w->field) *)&w->field = (v))

#define W3(a, b, c) (((__u64)(a) << 16) | ((__u64)(b) << 8) | (__u64)(c))
#define W4(a, b, c, d) ((W3(a, b, c) << 8) | (__u64)(d))
#define W6(a, b, c, d, e, f) ((W4(a, b, c, d) << 16) | ((__u64)(e) << 8) | (__u64)(f))
#define W7(a, b, c, d, e, f, g) ((W6(a, b, c, d, e, f) << 8) | (__u64)(g))

static __always_inline __u32 verb_of(__u64 w)
{
	/* Token bytes are never 0, so the word of a shorter verb differs from a longer one's. */
	if (w == W3('g', 'e', 't'))
		return BERTHA_SHARD_V_GET;
	if (w == W4('g', 'e', 't', 's'))
		return BERTHA_SHARD_V_GETS;
	if (w == W3('s', 'e', 't'))
		return BERTHA_SHARD_V_SET;
	if (w == W3('a', 'd', 'd'))
		return BERTHA_SHARD_V_ADD;
	if (w == W7('r', 'e', 'p', 'l', 'a', 'c', 'e'))
		return BERTHA_SHARD_V_REPLACE;
	if (w == W3('c', 'a', 's'))
		return BERTHA_SHARD_V_CAS;
	if (w == W6('d', 'e', 'l', 'e', 't', 'e'))
		return BERTHA_SHARD_V_DELETE;
	return BERTHA_SHARD_V_NONE;
}

static __always_inline int multi_key(__u32 verb)
{
	return verb == BERTHA_SHARD_V_GET || verb == BERTHA_SHARD_V_GETS;
}

static __always_inline int storage(__u32 verb)
{
	return verb >= BERTHA_SHARD_V_SET && verb <= BERTHA_SHARD_V_CAS;
}

/* Is token `tok` of a `verb` line a key? */
static __always_inline int key_token(__u32 verb, __u32 tok)
{
	return tok == 1 || (tok > 1 && multi_key(verb));
}

/* A token ended (a space or the line's end after it). 0: the line cannot be steered. */
static __always_inline int token_end(struct shard_work *w)
{
	__u32 tok = LD(tok);

	if (tok == 0) {
		__u32 v = verb_of(LD(word));
		if (v == BERTHA_SHARD_V_NONE)
			return 0;
		ST(verb, v);
	} else if (key_token(LD(verb), tok)) {
		__u32 sh = bertha_shard_of(LD(hash), shard_count);
		if (LD(shard) == SHARD_NONE)
			ST(shard, sh);
		else if (LD(shard) != sh)
			return 0; /* a multi-get across shards: the proxy splits it */
		ST(hash, BERTHA_SHARD_HASH_INIT);
	}
	ST(tok, tok + 1);
	ST(tlen, 0);
	ST(in_key, key_token(LD(verb), tok + 1));
	return 1;
}

/* One byte of the command line that is not a key's: a separator, the line's end, a verb's or
 * an argument's byte (`next` is the byte after it, read by the caller). Returns 0 to go on, -1 when the line cannot be steered, or where the line
 * ends (the index after its '\n'). A global function: the verifier checks it once, not once per
 * byte of the loop that calls it. */
__attribute__((noinline)) int shard_byte(struct shard_work *w, __u32 c, __u32 next, __u32 i,
					 __u32 n)
{
	__u32 tok, tlen;

	if (!w)
		return -1;
	if (c == ' ' || c == '\n' || c == '\r') {
		if (LD(tlen) && !token_end(w))
			return -1;
		if (c == ' ')
			return 0;
		if (c == '\r') { /* only as "\r\n" */
			if (i + 1 >= n || next != '\n')
				return -1;
			return (int)(i + 2);
		}
		return (int)(i + 1);
	}
	if (c < 0x21 || c == 0x7f) /* control characters are in no token */
		return -1;
	tok = LD(tok);
	tlen = LD(tlen);
	if (tok == 0) {
		if (tlen >= 8) /* longer than any verb */
			return -1;
		ST(word, (LD(word) << 8) | c);
	} else if (tok == 4 && storage(LD(verb))) {
		__u32 b = LD(bytes) * 10 + (__u32)(c - '0');
		if (c < '0' || c > '9' || b > BERTHA_SHARD_VALUE_MAX)
			return -1;
		ST(bytes, b);
	}
	ST(tlen, tlen + 1);
	return 0;
}

/* The line ended at buf[line_end - 1] ('\n'). Is it one whole command of its verb, alone in the
 * datagram of `plen` payload bytes? Returns the shard or SHARD_NONE. */
static __always_inline __u32 line_done(struct xdp_md *ctx, struct shard_work *w, __u32 line_end,
				       __u32 plen, __u32 poff)
{
	__u32 verb = LD(verb), tok = LD(tok);
	__u8 tail[2];

	if (tok < 2) /* an empty line, or a verb without a key */
		return SHARD_NONE;
	tok -= 1; /* arguments after the verb */
	if (multi_key(verb) || verb == BERTHA_SHARD_V_DELETE) {
		if (verb == BERTHA_SHARD_V_DELETE && tok > 3)
			return SHARD_NONE;
		/* Nothing after the line: a second command could be another shard's. */
		return line_end == plen ? LD(shard) : SHARD_NONE;
	}
	if (verb == BERTHA_SHARD_V_CAS ? (tok < 5 || tok > 6) : (tok < 4 || tok > 5))
		return SHARD_NONE;
	/* The data block, then "\r\n", then the datagram's end. */
	if (plen != line_end + LD(bytes) + 2)
		return SHARD_NONE;
	if (bpf_xdp_load_bytes(ctx, poff + plen - 2, tail, 2) != 0)
		return SHARD_NONE;
	return tail[0] == '\r' && tail[1] == '\n' ? LD(shard) : SHARD_NONE;
}

/* The shard of the request in buf[0, n) (the frame header, then the start of the command line),
 * whose payload is `plen` bytes; SHARD_NONE when it is not one the stage steers. */
static __always_inline __u32 shard_pick(struct xdp_md *ctx, struct shard_work *w, __u32 n,
					__u32 plen, __u32 poff)
{
	__u32 i;

	ST(tok, 0);
	ST(tlen, 0);
	ST(verb, BERTHA_SHARD_V_NONE);
	ST(hash, BERTHA_SHARD_HASH_INIT);
	ST(shard, SHARD_NONE);
	ST(bytes, 0);
	ST(word, 0);
	ST(in_key, 0);
	for (i = BERTHA_MC_UDP_HDR; i < SHARD_BUF; i++) {
		__u32 tlen;
		int r;
		__u8 c;

		if (i >= n) /* no line end in what the stage reads: truncated, or too long */
			return SHARD_NONE;
		c = w->buf[i];
		if (c > 0x20 && c != 0x7f && LD(in_key)) { /* a key's byte: the fast path */
			tlen = LD(tlen);
			if (tlen >= BERTHA_KV_MAX_KEY)
				return SHARD_NONE;
			ST(hash, bertha_shard_hash_step(LD(hash), c));
			ST(tlen, tlen + 1);
			continue;
		}
		r = shard_byte(w, c, w->buf[i + 1], i, n);
		if (r < 0)
			return SHARD_NONE;
		if (r > 0)
			return line_done(ctx, w, (__u32)r, plen, poff);
	}
	return SHARD_NONE;
}

SEC("xdp")
int shard_steer(struct xdp_md *ctx)
{
	struct bertha_scratch *s = bertha_scratch_get(BERTHA_HOOK_XDP);
	struct shard_work *w;
	struct udphdr *udp;
	__u32 zero = 0, n, plen, poff, l4, shard;
	void *data, *end;

	if (!s)
		return XDP_PASS;
	if (shard_count == 0 || shard_count > BERTHA_SHARD_MAX ||
	    shard_base + shard_count - 1 > 65535) { /* the loader refuses these; rodata by hand */
		bertha_count(s, BERTHA_HOOK_XDP, BERTHA_C_ERROR);
		return bertha_xdp_next(ctx, s);
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	plen = s->pkt.payload_len;
	poff = s->pkt.payload_off;
	w = bpf_map_lookup_elem(&shard_work, &zero);
	if (!w) {
		bertha_count(s, BERTHA_HOOK_XDP, BERTHA_C_ERROR);
		return bertha_xdp_next(ctx, s);
	}
	shard = SHARD_NONE;
	if (plen > BERTHA_MC_UDP_HDR && !bertha_pkt_is_negotiation(data, end, s)) {
		n = plen < SHARD_BUF ? plen : SHARD_BUF;
		asm volatile("" : "+r"(n)); /* keep the bound where the verifier sees it */
		if (n > SHARD_BUF)
			n = SHARD_BUF;
		if (n > 0 && bpf_xdp_load_bytes(ctx, poff, w->buf, n) == 0 &&
		    /* total == 1: a message of one datagram */
		    w->buf[4] == 0 && w->buf[5] == 1)
			shard = shard_pick(ctx, w, n, plen, poff);
	}
	l4 = s->pkt.l4_off;
	if (shard == SHARD_NONE || l4 > BERTHA_SHARD_L4_MAX) {
		bertha_count(s, BERTHA_HOOK_XDP, BERTHA_C_PASS);
		return bertha_xdp_next(ctx, s);
	}
	data = (void *)(long)ctx->data; /* bpf_xdp_load_bytes invalidated packet pointers */
	end = (void *)(long)ctx->data_end;
	udp = (struct udphdr *)((unsigned char *)data + l4);
	if (!BERTHA_FITS(udp, sizeof(*udp), end)) {
		bertha_count(s, BERTHA_HOOK_XDP, BERTHA_C_PASS);
		return bertha_xdp_next(ctx, s);
	}
	bertha_udp_set_port(udp, &udp->dest, (__u16)(shard_base + shard));
	bertha_count(s, BERTHA_HOOK_XDP, BERTHA_C_HIT);
	return bertha_xdp_next(ctx, s);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
