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
#include "bertha/negotiation.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BERTHA_PORTS);
	__type(key, __u32);
	__type(value, struct bertha_flow);
} bertha_ports SEC(".maps");

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

/* Where this stage sits, written by the loader into each loaded stage's rodata: the slot its
 * counters use, and the next stage's slot (BERTHA_NO_SLOT for the last). A constant tail-call
 * index lets the JIT patch a direct jump instead of an indirect one through a retpoline. */
const volatile __u32 bertha_slot = 0;
const volatile __u32 bertha_next_slot = BERTHA_NO_SLOT;

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
	bertha_count_slot(s, hook, bertha_slot, counter);
}

/* Is the packet the dispatcher parsed a negotiation datagram (negotiation.h)? A stage that
 * counts or steers data leaves those alone, as the negotiation layer takes them out of the
 * data path in userspace. */
static __always_inline int bertha_pkt_is_negotiation(const void *data, const void *end,
						     const struct bertha_scratch *s)
{
	__u16 off = s->pkt.payload_off;

	/* The verifier wants packet offsets below 64 KiB; a header-long payload cannot start this
	 * late in a linear frame anyway. */
	if (off > 0xffff - BERTHA_NEG_HEADER_SIZE)
		return 0;
	return bertha_is_negotiation((const unsigned char *)data + off, s->pkt.payload_len, end);
}

/* Hand the packet to the next stage of the chain; after the last stage, to the kernel. */
static __always_inline int bertha_xdp_next(struct xdp_md *ctx, struct bertha_scratch *s)
{
	if (bertha_next_slot == BERTHA_NO_SLOT) /* the verifier drops the dead branch */
		return XDP_PASS;
	s->slot = bertha_next_slot;
	bpf_tail_call(ctx, &bertha_xdp_chain, bertha_next_slot);
	return XDP_PASS; /* the slot is empty (a detach in progress): to the kernel */
}

/* TC egress: TC_ACT_UNSPEC lets the packet continue (to the next tcx program or clsact filter,
 * then out) exactly as if we were not there. */
static __always_inline int bertha_tc_next(struct __sk_buff *skb, struct bertha_scratch *s)
{
	if (bertha_next_slot == BERTHA_NO_SLOT)
		return TC_ACT_UNSPEC;
	s->slot = bertha_next_slot;
	bpf_tail_call(skb, &bertha_tc_chain, bertha_next_slot);
	return TC_ACT_UNSPEC;
}

#endif
