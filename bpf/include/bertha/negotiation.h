/* The one wire fact of negotiation that BPF needs too: how a negotiation datagram is told from
 * application data. Userspace's negotiation layer (userspace/bertha/wire.hpp) takes every UDP
 * payload this test matches out of the data path, so an offload stage that counts or steers
 * data applies the same test to agree with it (e.g. `count` does not count a retransmitted
 * offer that arrives after its attach). The full header layout stays in wire.hpp: BPF never
 * parses more than the magic. Included by clang -target bpf, g++ and the clang fuzz build. */
#ifndef BERTHA_NEGOTIATION_H
#define BERTHA_NEGOTIATION_H

#ifdef __cplusplus
#define BERTHA_NEG_INLINE static inline
#else
#define BERTHA_NEG_INLINE static inline __attribute__((always_inline))
#endif

/* The first four bytes of every negotiation datagram, big-endian on the wire. */
#define BERTHA_NEG_MAGIC 0xC49B1EB7u
/* The negotiation header's size: a shorter payload is never negotiation. */
#define BERTHA_NEG_HEADER_SIZE 24

/* Is the UDP payload [p, p + len) a negotiation datagram? `end` bounds the readable bytes (the
 * packet's end in BPF; p + len in userspace), so that the verifier sees every read checked. */
BERTHA_NEG_INLINE int bertha_is_negotiation(const unsigned char *p, unsigned int len,
					    const void *end)
{
	if (len < BERTHA_NEG_HEADER_SIZE || p + 4 > (const unsigned char *)end)
		return 0;
	return p[0] == (BERTHA_NEG_MAGIC >> 24) && p[1] == ((BERTHA_NEG_MAGIC >> 16) & 0xff) &&
	       p[2] == ((BERTHA_NEG_MAGIC >> 8) & 0xff) && p[3] == (BERTHA_NEG_MAGIC & 0xff);
}

#undef BERTHA_NEG_INLINE
#endif
