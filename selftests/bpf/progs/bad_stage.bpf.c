// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* bad_stage: a stage the verifier must refuse (it reads the packet without a bounds check).
 * Test-only: it proves that a refused load reports the interface, the program and the
 * verifier's log (selftests/bpf/load_error_test.cpp). */
#include "bertha/stage.h"

SEC("xdp")
int bad_unbounded(struct xdp_md *ctx)
{
	unsigned char *data = (unsigned char *)(long)ctx->data;
	struct bertha_scratch *s = bertha_scratch_get(BERTHA_HOOK_XDP);

	if (!s)
		return XDP_PASS;
	return data[64] == 0x42 ? XDP_DROP : bertha_xdp_next(ctx, s); /* no check against data_end */
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
