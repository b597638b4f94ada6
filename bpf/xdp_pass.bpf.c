// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* bertha_xdp_pass: returns XDP_PASS and does nothing else — no map, no parse, no counter. The
 * baseline of selftests/bench/dispatch: what running any XDP program at all costs, so that the
 * dispatcher's figures say what Bertha adds on top. (passcount counts, so it is not bare.) */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int bertha_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
