/* Per-CPU counters of an offload stage: one definition for BPF and C++ (userspace sums the
 * per-CPU copies). Keep every field a __u64 so the layout is the same on both sides. */
#ifndef BERTHA_COUNTERS_H
#define BERTHA_COUNTERS_H

#include <linux/types.h>

struct bertha_counters {
	__u64 packets; /* packets seen */
	__u64 bytes;   /* bytes seen, from the start of the Ethernet header */
};

#ifdef __cplusplus
static_assert(sizeof(struct bertha_counters) == 16, "bertha_counters is shared with BPF");
#else
_Static_assert(sizeof(struct bertha_counters) == 16, "bertha_counters is shared with BPF");
#endif

#endif
