/* The offload framework's wire facts, one definition for BPF and C++: the flow table's key and
 * value, the chain layout in the program arrays, the per-stage counters, the per-CPU scratch a
 * packet carries from the dispatcher through its chain, and the chain records the loader keeps
 * in a pinned map (so a restarted loader, or `bertha-load status`, reads them back).
 *
 * Layout of one interface (every map pinned under <bpffs>/bertha/<ifname>/):
 *   bertha_ports      array  (hook, local port) -> the port's any-peer flow: one array lookup,
 *                            which the JIT inlines, is all an ordinary packet costs
 *   bertha_flows      hash   flow key -> chain id, for flows of one peer (looked up only on a
 *                            port whose entry says BERTHA_FLOW_PEERS)
 *   bertha_xdp_chain  prog array: XDP stages, slot = chain * BERTHA_MAX_STAGES + position
 *   bertha_tc_chain   prog array: TC egress stages, same slots
 *   bertha_stats      per-CPU array of counters: index = bertha_stats_index(hook, slot)
 *   bertha_scratch    per-CPU array, one entry per hook: the packet in flight on this CPU
 *   bertha_chains     array of chain records (what the loader attached, for status/re-adopt)
 *   bertha_xsks       XSKMAP, made with the first `xsk` stage (chunnels/xsk/xsk.bpf.c): the
 *                     AF_XDP sockets of chain c on RX queue q at bertha_xsk_index(c, q) */
#ifndef BERTHA_FLOW_H
#define BERTHA_FLOW_H

#include "bertha/parse.h"

#define BERTHA_MAX_CHAINS 64 /* flows with a chain, per interface (both hooks together) */
#define BERTHA_MAX_STAGES 8  /* stages in one chain; a power of two (slot arithmetic) */
#define BERTHA_SLOTS (BERTHA_MAX_CHAINS * BERTHA_MAX_STAGES)
#define BERTHA_DISP_SLOT BERTHA_SLOTS            /* the dispatcher's own counters */
#define BERTHA_STATS_PER_HOOK (BERTHA_SLOTS + 1)
#define BERTHA_NO_CHAIN 0xffffffffu
#define BERTHA_NO_SLOT 0xffffffffu /* a stage's next slot when it is the last of its chain */
#define BERTHA_PORTS (2 * 65536)  /* bertha_ports: one entry per hook and port */
#define BERTHA_TRAIL 16      /* counter events remembered for `bertha-load explain` */
#define BERTHA_NAME_LEN 16   /* a stage's name, NUL included */
#define BERTHA_CONFIG_LEN 64 /* a stage's configuration as the user wrote it, NUL included */
#define BERTHA_XSK_QUEUES 64 /* RX queues a chain's AF_XDP sockets can sit on */
#define BERTHA_XSKS (BERTHA_MAX_CHAINS * BERTHA_XSK_QUEUES) /* bertha_xsks entries */

enum bertha_hook {
	BERTHA_HOOK_XDP = 0,       /* ingress: the flow's port is the destination port */
	BERTHA_HOOK_TC_EGRESS = 1, /* egress: the flow's port is the source port */
	BERTHA_HOOKS = 2,
};

/* What a stage did with a packet; each is a per-CPU counter of the stage. */
enum bertha_counter {
	BERTHA_C_PASS = 0,  /* handed on: next stage, or the kernel at the end of the chain */
	BERTHA_C_TX,        /* sent back out (XDP_TX) */
	BERTHA_C_REDIRECT,  /* redirected (another interface, an AF_XDP socket) */
	BERTHA_C_DROP,      /* dropped on purpose */
	BERTHA_C_HIT,       /* found what it looks for (a flow, a cached key, ...) */
	BERTHA_C_MISS,      /* did not */
	BERTHA_C_ERROR,     /* could not do its job (and passed the packet on untouched) */
	BERTHA_COUNTERS,
};

struct bertha_stage_counters {
	__u64 v[BERTHA_COUNTERS];
};

/* The flow a packet belongs to. `family` 0 means any peer (peer and peer_port are zero). */
struct bertha_flow_key {
	__u8 hook;        /* enum bertha_hook */
	__u8 proto;       /* IPPROTO_UDP */
	__be16 port;      /* local port, network order */
	__u8 family;      /* 0 (any peer), 4 or 6 */
	__u8 pad0;
	__be16 peer_port; /* network order; 0: any port of that peer */
	__u8 peer[16];    /* IPv4 in the first 4 bytes */
};

#define BERTHA_FLOW_PEERS 1u /* flows for specific peers exist on this port: look them up */
#define BERTHA_FLOW_CHAIN 2u /* `chain` is valid (in bertha_ports, where entries start zeroed) */

struct bertha_flow {
	__u32 chain; /* chain id when BERTHA_FLOW_CHAIN is set */
	__u32 flags;
};

/* One entry per stage counter event, in order, for `explain`. */
struct bertha_trail_entry {
	__u16 slot;    /* chain * BERTHA_MAX_STAGES + position; BERTHA_DISP_SLOT: the dispatcher */
	__u8 counter;  /* enum bertha_counter */
	__u8 hook;
};

/* The packet in flight on this CPU (one entry per hook). A chain runs by tail calls without
 * leaving the CPU, so the dispatcher's parse is handed on here instead of being redone. */
struct bertha_scratch {
	struct bertha_pkt pkt;
	__u32 slot;  /* the running stage */
	__u32 seq;   /* packets the dispatcher has seen on this CPU: `explain` checks its run */
	__u32 trail_len;
	__u32 pad;
	struct bertha_trail_entry trail[BERTHA_TRAIL];
};

/* What the loader attached as one chain, kept in the pinned bertha_chains map. */
struct bertha_chain_record {
	__u8 used;
	__u8 hook;
	__u8 nstages;
	__u8 pad;
	__u32 refs;            /* attachments sharing this chain (connections, agent clients) */
	struct bertha_flow_key key;
	__u32 prog_ids[BERTHA_MAX_STAGES];
	char names[BERTHA_MAX_STAGES][BERTHA_NAME_LEN];
	char config[BERTHA_MAX_STAGES][BERTHA_CONFIG_LEN];
};

BERTHA_INLINE __u32 bertha_stats_index(__u32 hook, __u32 slot)
{
	return hook * BERTHA_STATS_PER_HOOK + slot;
}

/* Where chain `chain`'s AF_XDP socket on RX queue `queue` sits in bertha_xsks. */
BERTHA_INLINE __u32 bertha_xsk_index(__u32 chain, __u32 queue)
{
	return chain * BERTHA_XSK_QUEUES + queue;
}

BERTHA_INLINE __u32 bertha_port_index(__u32 hook, __u16 port_host)
{
	return hook * 65536u + port_host;
}

#ifdef __cplusplus
#define BERTHA_SASSERT static_assert
#else
#define BERTHA_SASSERT _Static_assert
#endif
BERTHA_SASSERT((BERTHA_MAX_STAGES & (BERTHA_MAX_STAGES - 1)) == 0, "slots are chain*stages+pos");
BERTHA_SASSERT(BERTHA_MAX_STAGES < 33, "a chain runs by tail calls: at most 33");
BERTHA_SASSERT(sizeof(struct bertha_stage_counters) == 56, "bertha_stage_counters is shared");
BERTHA_SASSERT(sizeof(struct bertha_flow_key) == 24, "bertha_flow_key is shared with BPF");
BERTHA_SASSERT(sizeof(struct bertha_flow) == 8, "bertha_flow is shared with BPF");
BERTHA_SASSERT(sizeof(struct bertha_trail_entry) == 4, "bertha_trail_entry is shared");
BERTHA_SASSERT(sizeof(struct bertha_scratch) == 96, "bertha_scratch is shared with BPF");
BERTHA_SASSERT(sizeof(struct bertha_chain_record) == 32 + 32 + 128 + 512,
	       "bertha_chain_record is shared with BPF");
#undef BERTHA_SASSERT

#endif
