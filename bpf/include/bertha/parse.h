/* Bounded packet parsing shared by BPF programs and their userspace fallbacks: the same source
 * compiles with clang -target bpf and with g++, so both sides agree on what a packet is.
 *
 * Every helper checks its access against `end` once and returns a pointer or NULL. Loops have
 * constant bounds. What is not understood is reported, never guessed: a caller passes such a
 * packet on untouched. */
#ifndef BERTHA_PARSE_H
#define BERTHA_PARSE_H

#ifdef __cplusplus
#include <cstddef>
#include <cstdint>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#define BERTHA_INLINE static inline
#define bertha_ntohs(x) ntohs(x)
#define bertha_htons(x) htons(x)
#else
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#define BERTHA_INLINE static __always_inline
#define bertha_ntohs(x) bpf_ntohs(x)
#define bertha_htons(x) bpf_htons(x)
#endif

#define BERTHA_MAX_VLANS 2   /* 802.1Q / 802.1ad tags walked */
#define BERTHA_MAX_V6_EXT 4  /* IPv6 extension headers walked before giving up */

/* Why a packet was not parsed to its UDP payload (0: it was). */
enum bertha_parse_status {
	BERTHA_PARSE_OK = 0,
	BERTHA_PARSE_TRUNCATED = 1,    /* shorter than a header says */
	BERTHA_PARSE_NOT_IP = 2,       /* not IPv4/IPv6 (ARP, LLDP, ...) */
	BERTHA_PARSE_NOT_UDP = 3,      /* IP, but another protocol (TCP, ICMP, ...) */
	BERTHA_PARSE_FRAGMENT = 4,     /* an IP fragment: its UDP header may be elsewhere */
	BERTHA_PARSE_BAD_HEADER = 5,   /* an impossible field (IHL < 5, UDP length < 8) */
	BERTHA_PARSE_TOO_DEEP = 6,     /* more VLAN tags or IPv6 extensions than we walk */
};

/* What the parser found; offsets are from the start of the frame. */
struct bertha_pkt {
	__u16 l3_off;     /* the IP header */
	__u16 l4_off;     /* the UDP header */
	__u16 payload_off;
	__u16 payload_len; /* from the UDP length field, bounded by the frame */
	__u16 vlans;
	__u8 ip_version; /* 4 or 6 */
	__u8 status;     /* enum bertha_parse_status */
	__u16 sport, dport; /* host order */
};

#ifdef __cplusplus
static_assert(sizeof(struct bertha_pkt) == 16, "bertha_pkt is shared with BPF");
#else
_Static_assert(sizeof(struct bertha_pkt) == 16, "bertha_pkt is shared with BPF");
#endif

struct bertha_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* [p, p + len) inside [.., end)? Written so the verifier sees the bound on p itself. */
#define BERTHA_FITS(p, len, end) ((const unsigned char *)(p) + (len) <= (const unsigned char *)(end))

/* Parse Ethernet (+ VLANs), IPv4 (with options) or IPv6 (extension headers, bounded), and UDP.
 * Fills `out` and returns its status. `data`/`end` are the frame. */
BERTHA_INLINE int bertha_parse_udp(const void *data, const void *end, struct bertha_pkt *out)
{
	const unsigned char *p = (const unsigned char *)data;
	const struct ethhdr *eth = (const struct ethhdr *)p;
	__u16 proto;
	__u8 l4proto;
	int i;

	out->status = BERTHA_PARSE_TRUNCATED;
	out->vlans = 0;
	out->ip_version = 0;
	if (!BERTHA_FITS(eth, sizeof(*eth), end))
		return out->status;
	proto = eth->h_proto;
	p += sizeof(*eth);
	for (i = 0; i < BERTHA_MAX_VLANS; i++) {
		const struct bertha_vlan_hdr *v = (const struct bertha_vlan_hdr *)p;
		if (proto != bertha_ntohs(ETH_P_8021Q) && proto != bertha_ntohs(ETH_P_8021AD))
			break;
		if (!BERTHA_FITS(v, sizeof(*v), end))
			return out->status = BERTHA_PARSE_TRUNCATED;
		proto = v->proto;
		p += sizeof(*v);
		out->vlans++;
	}
	if (proto == bertha_ntohs(ETH_P_8021Q) || proto == bertha_ntohs(ETH_P_8021AD))
		return out->status = BERTHA_PARSE_TOO_DEEP;
	out->l3_off = (__u16)(p - (const unsigned char *)data);

	/* IP header fields are read as bytes at their offsets: in a frame the header sits at offset
	 * 14 (+4 per VLAN tag), where C++ must not access a struct iphdr/ipv6hdr (misaligned). */
	if (proto == bertha_ntohs(ETH_P_IP)) {
		__u32 ihl;
		if (!BERTHA_FITS(p, sizeof(struct iphdr), end))
			return out->status = BERTHA_PARSE_TRUNCATED;
		out->ip_version = 4;
		ihl = (p[0] & 0x0fu) * 4u;
		if ((p[0] >> 4) != 4 || ihl < sizeof(struct iphdr))
			return out->status = BERTHA_PARSE_BAD_HEADER;
		if (ihl > 60 || !BERTHA_FITS(p, ihl, end))
			return out->status = BERTHA_PARSE_TRUNCATED;
		/* MF set or a non-zero offset (frag_off, bytes 6-7): not the whole datagram. */
		if (((p[6] << 8) | p[7]) & 0x3fff)
			return out->status = BERTHA_PARSE_FRAGMENT;
		l4proto = p[9]; /* protocol */
		p += ihl;
	} else if (proto == bertha_ntohs(ETH_P_IPV6)) {
		if (!BERTHA_FITS(p, sizeof(struct ipv6hdr), end))
			return out->status = BERTHA_PARSE_TRUNCATED;
		out->ip_version = 6;
		l4proto = p[6]; /* nexthdr */
		p += sizeof(struct ipv6hdr);
		for (i = 0; i < BERTHA_MAX_V6_EXT; i++) {
			const unsigned char *ext = p;
			if (l4proto == IPPROTO_FRAGMENT)
				return out->status = BERTHA_PARSE_FRAGMENT;
			if (l4proto != IPPROTO_HOPOPTS && l4proto != IPPROTO_ROUTING &&
			    l4proto != IPPROTO_DSTOPTS)
				break;
			if (!BERTHA_FITS(ext, 2, end))
				return out->status = BERTHA_PARSE_TRUNCATED;
			l4proto = ext[0];
			p += (ext[1] + 1u) * 8u;
		}
		if (l4proto == IPPROTO_HOPOPTS || l4proto == IPPROTO_ROUTING ||
		    l4proto == IPPROTO_DSTOPTS || l4proto == IPPROTO_FRAGMENT)
			return out->status = l4proto == IPPROTO_FRAGMENT ? BERTHA_PARSE_FRAGMENT
									 : BERTHA_PARSE_TOO_DEEP;
	} else {
		return out->status = BERTHA_PARSE_NOT_IP;
	}

	if (l4proto != IPPROTO_UDP)
		return out->status = BERTHA_PARSE_NOT_UDP;
	{
		const struct udphdr *udp = (const struct udphdr *)p;
		__u16 ulen;
		__u16 avail;
		if (!BERTHA_FITS(udp, sizeof(*udp), end))
			return out->status = BERTHA_PARSE_TRUNCATED;
		ulen = bertha_ntohs(udp->len);
		if (ulen < sizeof(*udp))
			return out->status = BERTHA_PARSE_BAD_HEADER;
		out->l4_off = (__u16)(p - (const unsigned char *)data);
		out->payload_off = (__u16)(out->l4_off + sizeof(*udp));
		avail = (__u16)((const unsigned char *)end - (p + sizeof(*udp)));
		if ((__u16)(ulen - sizeof(*udp)) > avail)
			return out->status = BERTHA_PARSE_TRUNCATED;
		out->payload_len = (__u16)(ulen - sizeof(*udp));
		out->sport = bertha_ntohs(udp->source);
		out->dport = bertha_ntohs(udp->dest);
	}
	return out->status = BERTHA_PARSE_OK;
}

#endif
