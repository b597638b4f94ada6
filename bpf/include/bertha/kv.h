/* The key-value service's wire facts, one definition for BPF and C++ (examples/kv, the shard
 * chunnel and its offload, chunnels/shard): the memcached UDP frame header, the key bound, and
 * the shard hash. Every implementation of `shard` (the client, the proxy, the XDP stage) picks
 * a key's shard with bertha_shard_of(bertha_shard_hash(key)), so they agree by construction. */
#ifndef BERTHA_KV_H
#define BERTHA_KV_H

#ifdef __cplusplus
#include <cstddef>
#include <cstdint>
#include <linux/types.h>
#define BERTHA_KV_INLINE static inline
#else
#include <linux/types.h>
#define BERTHA_KV_INLINE static inline __attribute__((always_inline))
#endif

/* memcached's UDP frame header, in front of every request and response datagram (all fields
 * big-endian): the request id the client chose, this datagram's sequence number and the
 * datagram count of the message, and a reserved 0. */
struct bertha_mc_udp_hdr {
	__be16 request_id;
	__be16 seq;
	__be16 total;
	__be16 reserved;
};

#define BERTHA_MC_UDP_HDR 8     /* sizeof(struct bertha_mc_udp_hdr) */
#define BERTHA_KV_MAX_KEY 250   /* memcached's key limit: bytes, no spaces or control chars */
#define BERTHA_SHARD_MAX 256    /* shards of one service (a port each) */

/* FNV-1a, 32 bits, over every byte of the key (never a prefix): small enough for a bounded BPF
 * loop, and it spreads short, similar keys ("key:1", "key:2") well. */
#define BERTHA_SHARD_HASH_INIT 2166136261u
#define BERTHA_SHARD_HASH_PRIME 16777619u

BERTHA_KV_INLINE __u32 bertha_shard_hash_step(__u32 h, __u8 byte)
{
	return (h ^ byte) * BERTHA_SHARD_HASH_PRIME;
}

/* The shard of a hash among `shards` (1..BERTHA_SHARD_MAX). */
BERTHA_KV_INLINE __u32 bertha_shard_of(__u32 hash, __u32 shards)
{
	return shards ? hash % shards : 0;
}

#ifdef __cplusplus
/* The whole key at once (userspace: the client, the proxy, the tests). */
inline __u32 bertha_shard_hash(const unsigned char* key, size_t len)
{
	__u32 h = BERTHA_SHARD_HASH_INIT;
	for (size_t i = 0; i < len; ++i) h = bertha_shard_hash_step(h, key[i]);
	return h;
}
static_assert(sizeof(struct bertha_mc_udp_hdr) == BERTHA_MC_UDP_HDR,
	      "the memcached UDP header is shared with BPF");
#else
_Static_assert(sizeof(struct bertha_mc_udp_hdr) == BERTHA_MC_UDP_HDR,
	       "the memcached UDP header is shared with BPF");
#endif

#undef BERTHA_KV_INLINE
#endif
