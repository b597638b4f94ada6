// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* passcount: the smallest useful XDP program. It counts every packet and its bytes per CPU and
 * passes it on untouched. It proves the BPF build (clang -> object -> skeleton -> selftest) and
 * is the model for a stage's counters. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "bertha/counters.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bertha_counters);
} passcount_stats SEC(".maps");

SEC("xdp")
int bertha_passcnt(struct xdp_md *ctx)
{
	__u32 key = 0;
	struct bertha_counters *c = bpf_map_lookup_elem(&passcount_stats, &key);

	if (c) { /* per-CPU slot: no atomics needed */
		c->packets++;
		c->bytes += ctx->data_end - ctx->data;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
