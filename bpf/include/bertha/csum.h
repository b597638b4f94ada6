/* Incremental Internet checksum updates (RFC 1624), shared by BPF programs and C++: when one
 * 16-bit field changes, the checksum is adjusted, never recomputed over the packet and never
 * zeroed to dodge the work. */
#ifndef BERTHA_CSUM_H
#define BERTHA_CSUM_H

#include "bertha/parse.h"

/* HC' = ~(~HC + ~m + m'), all in one's complement arithmetic on network-order words. */
BERTHA_INLINE __u16 bertha_csum_replace16(__u16 check, __u16 old_be, __u16 new_be)
{
	__u32 sum = (__u16)~check;
	sum += (__u16)~old_be;
	sum += new_be;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Set a UDP port field (network order) and fix the UDP checksum. IPv4 may carry checksum 0
 * ("none"): it stays 0. A computed 0 is sent as 0xffff (for IPv6 a zero checksum is illegal). */
BERTHA_INLINE void bertha_udp_set_port(struct udphdr *udp, __be16 *field, __u16 port_host)
{
	__be16 new_be = bertha_htons(port_host);
	__be16 old_be = *field;

	*field = new_be;
	if (udp->check == 0)
		return;
	udp->check = bertha_csum_replace16(udp->check, old_be, new_be);
	if (udp->check == 0)
		udp->check = 0xffff;
}

#endif
