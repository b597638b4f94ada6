/* What every program on a Bertha hook includes: the per-interface maps (declared identically in
 * the dispatchers and in every stage object; the loader hands each object the interface's
 * existing maps before load) and the helpers a stage uses to count what it did and to hand the
 * packet to the next stage of its chain.
 *
 * A stage is written as:
 *     struct bertha_scratch *s = bertha_scratch_get(BERTHA_HOOK_XDP);
 *     if (!s) return XDP_PASS;
 *     ... look at the packet, using s->pkt (already parsed by the dispatcher) ...
 *     bertha_count(s, BERTHA_HOOK_XDP, BERTHA_C_PASS);
 *     return bertha_xdp_next(ctx, s);   // or: count TX and return XDP_TX
 */
#ifndef BERTHA_STAGE_H
#define BERTHA_STAGE_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "bertha/flow.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct bertha_flow_key);
	__type(value, struct bertha_flow);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} bertha_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, BERTHA_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} bertha_xdp_chain SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, BERTHA_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} bertha_tc_chain SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BERTHA_HOOKS * BERTHA_STATS_PER_HOOK);
	__type(key, __u32);
	__type(value, struct bertha_stage_counters);
} bertha_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BERTHA_HOOKS);
	__type(key, __u32);
	__type(value, struct bertha_scratch);
} bertha_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BERTHA_MAX_CHAINS);
	__type(key, __u32);
	__type(value, struct bertha_chain_record);
} bertha_chains SEC(".maps");

static __always_inline struct bertha_scratch *bertha_scratch_get(__u32 hook)
{
	return bpf_map_lookup_elem(&bertha_scratch, &hook);
}

/* Count one event of the running stage (or the dispatcher) and remember it for `explain`. */
static __always_inline void bertha_count_slot(struct bertha_scratch *s, __u32 hook, __u32 slot,
					      __u32 counter)
{
	__u32 idx = bertha_stats_index(hook, slot);
	struct bertha_stage_counters *c = bpf_map_lookup_elem(&bertha_stats, &idx);
	__u32 n = s->trail_len;

	if (c && counter < BERTHA_COUNTERS)
		c->v[counter]++;
	if (n < BERTHA_TRAIL) {
		s->trail[n].slot = (__u16)slot;
		s->trail[n].counter = (__u8)counter;
		s->trail[n].hook = (__u8)hook;
		s->trail_len = n + 1;
	}
}

static __always_inline void bertha_count(struct bertha_scratch *s, __u32 hook, __u32 counter)
{
	bertha_count_slot(s, hook, s->slot, counter);
}

/* Hand the packet to the next stage of the chain; at the end of the chain, to the kernel. */
static __always_inline int bertha_xdp_next(struct xdp_md *ctx, struct bertha_scratch *s)
{
	__u32 next = s->slot + 1;

	if ((next & (BERTHA_MAX_STAGES - 1)) == 0) /* the last position: the chain ends here */
		return XDP_PASS;
	s->slot = next;
	bpf_tail_call(ctx, &bertha_xdp_chain, next);
	return XDP_PASS; /* empty slot: no more stages */
}

/* TC egress: TC_ACT_UNSPEC lets the packet continue (to the next tcx program or clsact filter,
 * then out) exactly as if we were not there. */
static __always_inline int bertha_tc_next(struct __sk_buff *skb, struct bertha_scratch *s)
{
	__u32 next = s->slot + 1;

	if ((next & (BERTHA_MAX_STAGES - 1)) == 0)
		return TC_ACT_UNSPEC;
	s->slot = next;
	bpf_tail_call(skb, &bertha_tc_chain, next);
	return TC_ACT_UNSPEC;
}

#endif
