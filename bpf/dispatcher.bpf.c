// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* bertha_disp: the root XDP program of an interface. It finds the packet's flow (protocol, local
 * port, optionally the peer) and runs the flow's chain of stages by tail calls, in stack order.
 * A packet no flow claims — or one it cannot parse — passes to the kernel untouched. The
 * loader owns it; `bertha-load status` shows it and its flows. */
#include "bertha/dispatch.h"

SEC("xdp")
int bertha_disp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct bertha_scratch *s = bertha_scratch_get(BERTHA_HOOK_XDP);
	__u32 chain;

	if (!s)
		return XDP_PASS;
	chain = bertha_dispatch(data, end, BERTHA_HOOK_XDP, s);
	if (chain == BERTHA_NO_CHAIN)
		return XDP_PASS;
	bpf_tail_call(ctx, &bertha_xdp_chain, s->slot);
	/* The flow names a chain with no first stage: a loader bug or a detach in progress. */
	bertha_count_slot(s, BERTHA_HOOK_XDP, BERTHA_DISP_SLOT, BERTHA_C_ERROR);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
