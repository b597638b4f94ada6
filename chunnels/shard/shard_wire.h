/* The shard offload's request grammar limits, one definition for the XDP stage (shard.bpf.c) and
 * its C++ reference (steer.hpp). The key hash and the shard limit are the key-value service's
 * (bpf/include/bertha/kv.h). */
#ifndef BERTHA_SHARD_WIRE_H
#define BERTHA_SHARD_WIRE_H

/* Bytes of the command line the stage reads after the memcached UDP frame header, its "\r\n" or
 * "\n" included: a longer line (a multi-get of many keys) is passed on for the proxy. */
#define BERTHA_SHARD_LINE_MAX 512
/* The UDP header must start within this many bytes of the frame (IPv6 extension headers). */
#define BERTHA_SHARD_L4_MAX 512
/* The <bytes> argument of a storage command, at most (a datagram is never longer). */
#define BERTHA_SHARD_VALUE_MAX 65535

/* The verbs the stage steers (their command line, case-sensitive as memcached's). */
enum bertha_shard_verb {
	BERTHA_SHARD_V_NONE = 0,
	BERTHA_SHARD_V_GET,     /* get <key>+            */
	BERTHA_SHARD_V_GETS,    /* gets <key>+           */
	BERTHA_SHARD_V_SET,     /* set <key> <flags> <exptime> <bytes> [noreply] */
	BERTHA_SHARD_V_ADD,     /* add ... as set        */
	BERTHA_SHARD_V_REPLACE, /* replace ... as set    */
	BERTHA_SHARD_V_CAS,     /* cas <key> <flags> <exptime> <bytes> <cas unique> [noreply] */
	BERTHA_SHARD_V_DELETE,  /* delete <key> [<time>] [noreply] */
};

#endif
