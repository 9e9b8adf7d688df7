/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every struct shared by the sk_lookup dispatcher and edgeproxy's TypeScript
 * control library. src/dispatcher/abi.ts mirrors these layouts by name, and
 * src/dispatcher/abi.test.ts checks the sizes and offsets against this file.
 */
#ifndef EDGEPROXY_DISPATCHER_H
#define EDGEPROXY_DISPATCHER_H

#include <linux/types.h>

/* Service 0 means "no service": the port is not bound at that prefix. */
#define EP_MAX_SERVICES 1024
/* Port-range slots per generation; the ranges map holds two generations. */
#define EP_RANGES_PER_GEN (1 << 17)
/* One socket slot per (service, protocol, family): see ep_socket_slot(). */
#define EP_SOCKET_SLOTS (EP_MAX_SERVICES * 4)
/* Bits of ep_prefix_key before the address: always matched in full. */
#define EP_PREFIX_KEY_HEADER_BITS 32

/*
 * LPM trie key. The header bytes (gen, protocol, family, reserved) are part of
 * the matched prefix, so one trie holds both generations, both protocols and
 * both families without them ever matching each other.
 * prefixlen = EP_PREFIX_KEY_HEADER_BITS + IP prefix length.
 */
struct ep_prefix_key {
	__u32 prefixlen;
	__u8 gen;
	__u8 protocol; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family;   /* AF_INET or AF_INET6 */
	__u8 reserved;
	__u8 addr[16]; /* network byte order; IPv4 uses the first 4 bytes */
};

/* Trie value: where this prefix's compiled port table lives in ep_ranges. */
struct ep_prefix_table {
	__u32 first; /* absolute index into ep_ranges */
	__u32 count; /* number of ranges, >= 1; ranges[first].start == 0 */
};

/*
 * A port table is a sorted, gap-free cover of 0..65535: entry i covers
 * [start_i, start_{i+1} - 1]. User space compiles overlapping bindings into it,
 * so the program finds the answer with one binary search.
 */
struct ep_port_range {
	__u32 start;
	__u32 service; /* 0: not bound here, let the kernel's lookup continue */
};

/* Per-CPU, per-service. Index 0 counts lookups that matched no binding. */
struct ep_service_counters {
	__u64 lookups;
	__u64 steered;
	__u64 missing_socket;
	__u64 assign_error;
};

/* Single-entry array: which generation of the trie and ranges is live. */
struct ep_state {
	__u32 gen;
	__u32 reserved;
};

static inline __u32 ep_socket_slot(__u32 service, __u32 is_udp, __u32 is_ipv6)
{
	return service * 4 + is_udp * 2 + is_ipv6;
}

#endif
