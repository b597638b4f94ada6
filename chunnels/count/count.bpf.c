// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* count: the smallest stage. It counts the connection's data datagrams (its `pass` counter) and
 * hands every packet to the next stage untouched. A negotiation datagram (a retransmitted offer
 * that arrives after the attach) is not data: the userspace negotiation layer takes it out before
 * the fallback counts, so the stage counts it as `miss` instead, and the two agree. It proves the offload machinery — flow lookup, chains, counters, explain —
 * before any real offload, and it is the model a stage follows. One program per hook: the
 * loader loads the one the chain needs. */
#include "bertha/stage.h"

SEC("xdp")
int count_xdp(struct xdp_md *ctx)
{
	struct bertha_scratch *s = bertha_scratch_get(BERTHA_HOOK_XDP);

	if (!s)
		return XDP_PASS;
	if (bertha_pkt_is_negotiation((void *)(long)ctx->data, (void *)(long)ctx->data_end, s))
		bertha_count(s, BERTHA_HOOK_XDP, BERTHA_C_MISS);
	else
		bertha_count(s, BERTHA_HOOK_XDP, BERTHA_C_PASS);
	return bertha_xdp_next(ctx, s);
}

SEC("tc")
int count_tc(struct __sk_buff *skb)
{
	struct bertha_scratch *s = bertha_scratch_get(BERTHA_HOOK_TC_EGRESS);

	if (!s)
		return TC_ACT_UNSPEC;
	if (bertha_pkt_is_negotiation((void *)(long)skb->data, (void *)(long)skb->data_end, s))
		bertha_count(s, BERTHA_HOOK_TC_EGRESS, BERTHA_C_MISS);
	else
		bertha_count(s, BERTHA_HOOK_TC_EGRESS, BERTHA_C_PASS);
	return bertha_tc_next(skb, s);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
