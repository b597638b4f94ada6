// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xsk_redirect_test: test-only. Redirects whole UDP datagrams to `xsk_port` into the AF_XDP
 * socket of the RX queue the packet arrived on (its own XSKMAP, indexed by rx_queue_index), and
 * passes everything else (ARP, neighbour discovery, ICMP, other ports, fragments) to the kernel
 * untouched. With no socket at that index the packet is passed too. It lets the xsk selftests
 * (selftests/unit/xsk_socket_test.cpp) exercise bertha::XskSocket alone; the real redirect is the
 * `xsk` stage behind the dispatcher. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "bertha/parse.h"

const volatile __u16 xsk_port = 0; /* host order; set through the skeleton's rodata */

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsk_test_socks SEC(".maps");

/* Per-CPU packet counts: 0 redirected, 1 passed (not ours), 2 passed (ours, no socket). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} xsk_test_counts SEC(".maps");

static __always_inline void count(__u32 key)
{
	__u64 *c = bpf_map_lookup_elem(&xsk_test_counts, &key);

	if (c)
		(*c)++;
}

SEC("xdp")
int xsk_redir_test(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct bertha_pkt pkt;

	if (bertha_parse_udp(data, end, &pkt) != BERTHA_PARSE_OK || pkt.dport != xsk_port ||
	    pkt.vlans != 0) {
		count(1);
		return XDP_PASS;
	}
	if (bpf_redirect_map(&xsk_test_socks, ctx->rx_queue_index, XDP_PASS) == XDP_REDIRECT) {
		count(0);
		return XDP_REDIRECT;
	}
	count(2);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
