// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* parse_probe: runs bertha_parse_udp() on a frame and stores what it found in a map, then
 * passes the frame on untouched. It exists so that the shared parser is checked against its
 * C++ build on the same fixtures (selftests/bpf/parse_test.cpp), and so that the verifier
 * accepts the parser on every kernel vmtest covers. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "bertha/parse.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bertha_pkt);
} parse_result SEC(".maps");

SEC("xdp")
int bertha_parse(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct bertha_pkt *out = bpf_map_lookup_elem(&parse_result, &key);

	if (out)
		bertha_parse_udp(data, end, out);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
