/* The flow lookup both root programs share (dispatcher.bpf.c on XDP, egress.bpf.c on TC egress):
 * parse the packet into this CPU's scratch, find its flow, and count what the dispatcher did.
 * Returns the chain id, or BERTHA_NO_CHAIN when the packet is not a flow's (it then passes
 * untouched). */
#ifndef BERTHA_DISPATCH_H
#define BERTHA_DISPATCH_H

#include "bertha/stage.h"

/* Copy the peer's address (source on ingress, destination on egress) into the key. */
static __always_inline int bertha_peer_key(const void *data, const void *end,
					   const struct bertha_pkt *pkt, __u32 hook,
					   struct bertha_flow_key *key)
{
	__u32 off = pkt->l3_off;
	const unsigned char *ip;

	/* l3_off is at most 14 + 2 VLAN tags: the mask changes nothing but shows the verifier a
	 * bound on the register (hidden from clang, which would drop it as dead). */
	asm volatile("" : "+r"(off));
	off &= 63;
	ip = (const unsigned char *)data + off;
	if (pkt->ip_version == 4) {
		if (!BERTHA_FITS(ip, 20, end))
			return -1;
		__builtin_memcpy(key->peer, ip + (hook == BERTHA_HOOK_XDP ? 12 : 16), 4);
		key->family = 4;
		key->peer_port = bertha_htons(hook == BERTHA_HOOK_XDP ? pkt->sport : pkt->dport);
		return 0;
	}
	if (!BERTHA_FITS(ip, 40, end))
		return -1;
	if (hook == BERTHA_HOOK_XDP)
		__builtin_memcpy(key->peer, ip + 8, 16);
	else
		__builtin_memcpy(key->peer, ip + 24, 16);
	key->family = 6;
	key->peer_port = bertha_htons(hook == BERTHA_HOOK_XDP ? pkt->sport : pkt->dport);
	return 0;
}

static __always_inline __u32 bertha_dispatch(const void *data, const void *end, __u32 hook,
					     struct bertha_scratch *s)
{
	struct bertha_flow *e;
	__u32 idx, chain;
	__u16 port;

	s->seq++;
	s->trail_len = 0;
	s->slot = BERTHA_DISP_SLOT;
	if (bertha_parse_udp(data, end, &s->pkt) != BERTHA_PARSE_OK) {
		/* Not a whole UDP datagram we can read: never ours to touch. */
		bertha_count_slot(s, hook, BERTHA_DISP_SLOT, BERTHA_C_PASS);
		return BERTHA_NO_CHAIN;
	}
	port = hook == BERTHA_HOOK_XDP ? s->pkt.dport : s->pkt.sport;
	idx = bertha_port_index(hook, port);
	e = bpf_map_lookup_elem(&bertha_ports, &idx);
	if (!e) /* cannot happen: the array has every port */
		return BERTHA_NO_CHAIN;
	chain = (e->flags & BERTHA_FLOW_CHAIN) ? e->chain : BERTHA_NO_CHAIN;
	if (e->flags & BERTHA_FLOW_PEERS) {
		/* A flow for this very peer wins over the port's any-peer flow. Only ports the loader
		 * flagged pay for these lookups. */
		struct bertha_flow_key key = {};
		struct bertha_flow *fp = 0;
		key.hook = (__u8)hook;
		key.proto = IPPROTO_UDP;
		key.port = bertha_htons(port);
		if (bertha_peer_key(data, end, &s->pkt, hook, &key) == 0) {
			fp = bpf_map_lookup_elem(&bertha_flows, &key);
			if (!fp) { /* then any port of that peer */
				key.peer_port = 0;
				fp = bpf_map_lookup_elem(&bertha_flows, &key);
			}
		}
		if (fp)
			chain = fp->chain;
	}
	if (chain >= BERTHA_MAX_CHAINS) {
		bertha_count_slot(s, hook, BERTHA_DISP_SLOT, BERTHA_C_MISS);
		return BERTHA_NO_CHAIN;
	}
	bertha_count_slot(s, hook, BERTHA_DISP_SLOT, BERTHA_C_HIT);
	s->slot = chain * BERTHA_MAX_STAGES;
	return chain;
}

#endif
