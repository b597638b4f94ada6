// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* count: the smallest stage. It counts the connection's data datagrams (its `pass` counter) and
 * hands every packet to the next stage untouched. A negotiation datagram (a retransmitted offer
 * that arrives after the attach) is not data: the userspace negotiation layer takes it out before
 * the fallback counts, so the stage counts it as `miss` instead, and the two agree. It proves the offload machinery — flow lookup, chains, counters, explain —
 * before any real offload, and it is the model a stage follows. One program per hook: the
 * loader loads the one the chain needs. */
#include "bertha/negotiation.h"
#include "bertha/stage.h"

/* The UDP payload of the packet the dispatcher parsed: is it negotiation? */
static __always_inline int negotiation(const void *data, const void *end,
				       const struct bertha_scratch *s)
{
	__u16 off = s->pkt.payload_off;

	/* The verifier wants packet offsets below 64 KiB; a 24-byte payload cannot start this late
	 * in a linear frame anyway. */
	if (off > 0xffff - BERTHA_NEG_HEADER_SIZE)
		return 0;
	return bertha_is_negotiation((const unsigned char *)data + off, s->pkt.payload_len, end);
}

SEC("xdp")
int count_xdp(struct xdp_md *ctx)
{
	struct bertha_scratch *s = bertha_scratch_get(BERTHA_HOOK_XDP);

	if (!s)
		return XDP_PASS;
	if (negotiation((void *)(long)ctx->data, (void *)(long)ctx->data_end, s))
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
	if (negotiation((void *)(long)skb->data, (void *)(long)skb->data_end, s))
		bertha_count(s, BERTHA_HOOK_TC_EGRESS, BERTHA_C_MISS);
	else
		bertha_count(s, BERTHA_HOOK_TC_EGRESS, BERTHA_C_PASS);
	return bertha_tc_next(skb, s);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
