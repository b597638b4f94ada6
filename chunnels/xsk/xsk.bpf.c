// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xsk: the stage that hands a flow's packets to its AF_XDP sockets (the `xsk` base chunnel,
 * userspace/xsk). It redirects the packet into bertha_xsks, the interface's XSKMAP, at the entry
 * of the chain whose sockets receive the flow and of the RX queue the packet arrived on: an
 * AF_XDP socket only receives from the queue it is bound to, so the base binds one per queue.
 * With no socket there (not yet bound, or closed: the kernel empties the entry), the packet goes
 * on to the kernel untouched, counted as `miss`. A redirect ends the chain: the loader puts this
 * stage last. */
#include "bertha/stage.h"

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, BERTHA_XSKS);
	__type(key, __u32);
	__type(value, __u32);
} bertha_xsks SEC(".maps");

/* Whose sockets receive the flow: BERTHA_NO_CHAIN means this chain's own (the base's chain for
 * its flow); otherwise that chain's, written by the loader from the stage's `sockets=CHAIN`
 * configuration (a peer's chain of offloads above an xsk listener ends in the listener's
 * sockets). */
const volatile __u32 xsk_chain = BERTHA_NO_CHAIN;

SEC("xdp")
int xsk_xdp(struct xdp_md *ctx)
{
	struct bertha_scratch *s = bertha_scratch_get(BERTHA_HOOK_XDP);
	__u32 chain = xsk_chain != BERTHA_NO_CHAIN ? xsk_chain : bertha_slot / BERTHA_MAX_STAGES;
	__u32 queue = ctx->rx_queue_index;

	if (!s)
		return XDP_PASS;
	if (queue >= BERTHA_XSK_QUEUES || chain >= BERTHA_MAX_CHAINS) {
		bertha_count(s, BERTHA_HOOK_XDP, BERTHA_C_ERROR);
		return bertha_xdp_next(ctx, s);
	}
	if (bpf_redirect_map(&bertha_xsks, bertha_xsk_index(chain, queue), XDP_PASS) ==
	    XDP_REDIRECT) {
		bertha_count(s, BERTHA_HOOK_XDP, BERTHA_C_REDIRECT);
		return XDP_REDIRECT;
	}
	bertha_count(s, BERTHA_HOOK_XDP, BERTHA_C_MISS);
	return bertha_xdp_next(ctx, s);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
