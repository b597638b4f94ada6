// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* bertha_egress: the root TC egress program of an interface (tcx where the kernel has it,
 * clsact otherwise). Same flow table as the XDP dispatcher, keyed by the source port: stages
 * that act on the way out (sequence stamping, cache fill) run here. Traffic no flow claims
 * continues as if we were not attached (TC_ACT_UNSPEC: the next program, then the wire). */
#include "bertha/dispatch.h"

SEC("tc")
int bertha_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct bertha_scratch *s = bertha_scratch_get(BERTHA_HOOK_TC_EGRESS);
	__u32 chain;

	if (!s)
		return TC_ACT_UNSPEC;
	chain = bertha_dispatch(data, end, BERTHA_HOOK_TC_EGRESS, s);
	if (chain == BERTHA_NO_CHAIN)
		return TC_ACT_UNSPEC;
	bpf_tail_call(skb, &bertha_tc_chain, s->slot);
	bertha_count_slot(s, BERTHA_HOOK_TC_EGRESS, BERTHA_DISP_SLOT, BERTHA_C_ERROR);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
