// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* port_rewrite: a UDP datagram to `match_port` is redirected to `new_port` in place — the
 * destination port is rewritten and the UDP checksum updated incrementally — then passed to
 * the kernel, which delivers it to the socket on the new port. Everything else passes
 * untouched. It is the primitive under key-based steering (shard/xdp), tested on its own. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "bertha/csum.h"
#include "bertha/counters.h"

const volatile __u16 match_port = 0; /* host order; set through the skeleton's rodata */
const volatile __u16 new_port = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2); /* 0: rewritten, 1: passed untouched */
	__type(key, __u32);
	__type(value, struct bertha_counters);
} port_rewrite_stats SEC(".maps");

static __always_inline void count(struct xdp_md *ctx, __u32 key)
{
	struct bertha_counters *c = bpf_map_lookup_elem(&port_rewrite_stats, &key);

	if (c) {
		c->packets++;
		c->bytes += ctx->data_end - ctx->data;
	}
}

SEC("xdp")
int bertha_port_rw(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct bertha_pkt pkt;
	struct udphdr *udp;
	__u32 off;

	if (bertha_parse_udp(data, end, &pkt) != BERTHA_PARSE_OK || pkt.dport != match_port) {
		count(ctx, 1);
		return XDP_PASS;
	}
	off = pkt.l4_off;
	if (off > 511) { /* deeper than any header stack we rewrite: leave it alone */
		count(ctx, 1);
		return XDP_PASS;
	}
	/* The mask is a no-op after the test above, but the verifier needs to see the bound on the
	 * register: hide `off` from clang so that it cannot drop the mask as dead. */
	asm volatile("" : "+r"(off));
	off &= 511;
	udp = (struct udphdr *)((unsigned char *)data + off);
	if ((void *)(udp + 1) > end) {
		count(ctx, 1);
		return XDP_PASS;
	}
	bertha_udp_set_port(udp, &udp->dest, new_port);
	count(ctx, 0);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
