/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every struct shared by the sk_lookup dispatcher and edgeproxy's TypeScript
 * control library. src/dispatcher/abi.ts mirrors these layouts by name (its
 * sizes and offsets; the encoders of the SO_REUSEPORT and per-client limit
 * structs are in reuseabi.ts and sourceabi.ts beside it, on those offsets),
 * and src/dispatcher/abi.test.ts checks them against this file.
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
/*
 * Each slot has this many SOCKMAP entries, one per registered member of the
 * slot's SO_REUSEPORT group (one per worker process, up to this many). The
 * program assigns the first member present; the kernel then runs the group's
 * reuseport selection (ep_migrate: a worker below its connection cap, see
 * ep_reuse_members). A member that closes drops out of the
 * SOCKMAP by itself, so steering falls through to the next one at once.
 */
#define EP_SOCKET_MEMBERS 4
/* Bits of ep_prefix_key before the address: always matched in full. */
#define EP_PREFIX_KEY_HEADER_BITS 32
/* Bits of ep_access_key before the address. */
#define EP_ACCESS_KEY_HEADER_BITS 64
/* Access rules per generation and service fit here (LPM trie, both generations). */
#define EP_MAX_ACCESS_RULES 65536

/* ep_service_flags values */
#define EP_SERVICE_HAS_RULES 1 /* look the source up in ep_access */
#define EP_SERVICE_DEFAULT_DENY 2 /* a source no rule matches is denied (there are allow rules) */

/* ep_access values */
#define EP_VERDICT_ALLOW 1
#define EP_VERDICT_DENY 2

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
	__u64 denied; /* refused by the service's access rules */
};

/*
 * Access rules: LPM trie on the client's (remote) address, per generation and
 * service, so a rule set is switched together with the bindings.
 * prefixlen = EP_ACCESS_KEY_HEADER_BITS + source prefix length.
 */
struct ep_access_key {
	__u32 prefixlen;
	__u8 gen;
	__u8 family;
	__u16 reserved;
	__u32 service; /* network byte order, so the trie matches it byte by byte */
	__u8 addr[16];
};

/*
 * The control plane's source of truth, pinned with the dispatcher so any
 * edgeproxy invocation can rebuild the lookup tables. The program never reads
 * these maps.
 */

/* ep_services: service id -> what it is. */
struct ep_service_info {
	char name[64]; /* NUL-padded */
	__u32 flags;   /* EP_SERVICE_TAKE_OVER */
	__u32 reserved;
};
#define EP_SERVICE_TAKE_OVER 1 /* steer ports where another socket already listens */

/* ep_bindings: one configured binding (value: unused __u32). */
struct ep_binding {
	__u32 service;
	__u8 protocol;
	__u8 family;
	__u8 prefix_len;
	__u8 reserved;
	__u16 port_lo;
	__u16 port_hi;
	__u8 addr[16];
};

/* ep_rules: one configured access rule (value: unused __u32). */
struct ep_rule {
	__u32 service;
	__u8 family;
	__u8 prefix_len;
	__u8 verdict; /* EP_VERDICT_* */
	__u8 reserved;
	__u8 addr[16];
};

/* ep_owners: member key (see ep_member_key()) -> who registered the socket, for status. */
struct ep_owner {
	__u32 pid;
	__u32 fd;
};

/* Single-entry array: which generation of the trie and ranges is live. */
struct ep_state {
	__u32 gen;
	__u32 flags; /* EP_STATE_*, for the live generation; 0 from older control planes */
};
/*
 * The live generation's full-length prefixes (/32, /128) are in ep_hosts as
 * well as in ep_prefixes: look there first. An exact match is the longest
 * match, and a hash lookup costs a fraction of a deep trie walk.
 */
#define EP_STATE_HOSTS 1

/*
 * ep_groups: socket slot -> the slot's SO_REUSEPORT group, so every worker and
 * the next process of an upgrade listen in the same group (the kernel applies
 * reuseport selection after bpf_sk_assign(), see inet_lookup_run_sk_lookup()).
 */
struct ep_group {
	__u32 port; /* loopback port the members listen on (127.0.0.1 or ::1) */
	__u32 reserved;
};

/*
 * Member selection in a TCP reuseport group (ep_migrate, see
 * reuseport.h): the listeners of workers below their connection cap.
 */
/* Positions per group: one per worker (--workers is at most this). */
#define EP_REUSE_MAX_MEMBERS 256
/* Listeners in all (ep_reuse_listeners): 256 groups of 256 workers. */
#define EP_REUSE_MAX_ENTRIES 65536
/*
 * Tiers of the selection (see reuseport.h): a worker below its soft mark is
 * at position p (tier 1) and p + EP_REUSE_MAX_MEMBERS (tier 2); one inside
 * its headroom (soft mark to cap) only at the second.
 */
#define EP_REUSE_TIERS 2

/* ep_reuse_members key: a listener with room, at its worker's position in its group. */
struct ep_reuse_key {
	__u32 group;    /* ep_reuse_group_id() */
	__u32 position; /* tier 1: the worker index, < ep_reuse_group.members; tier 2: EP_REUSE_MAX_MEMBERS + the index */
};

/* ep_reuse_groups: ep_reuse_group_id() -> the group's size and service. */
struct ep_reuse_group {
	__u32 members; /* positions in use: the workers of the process that registered last */
	__u32 service; /* for ep_reuse_counters */
};

/* Per-CPU, per-service. */
struct ep_reuse_counters {
	__u64 redirected;          /* the hashed position was empty (its worker at its cap, or restarting): another one took the connection */
	__u64 full;                /* every member at its cap: refused (SK_DROP) */
	__u64 migrated;            /* a closing listener's connection moved to a member with room */
	__u64 migrated_unselected; /* ... with none having room: left to the kernel's hash */
};

/*
 * ep_reuse_tier_counters: per-CPU, per-service. A map of its own, not a field
 * of ep_reuse_counters: a pinned map keeps its value size (compat.ts), so a
 * new field would make every older pin unusable.
 */
struct ep_reuse_tier_counters {
	__u64 second; /* no worker below its soft mark: a new connection went to one inside its headroom (tier 2) */
};

/* A TCP group by its listeners' loopback port (host order) and family. */
static inline __u32 ep_reuse_group_id(__u32 is_ipv6, __u32 port)
{
	return is_ipv6 << 16 | (port & 0xffff);
}

static inline __u32 ep_socket_slot(__u32 service, __u32 is_udp, __u32 is_ipv6)
{
	return service * 4 + is_udp * 2 + is_ipv6;
}

/* Key of member m of a slot in ep_sockets and ep_owners. */
static inline __u32 ep_member_key(__u32 slot, __u32 member)
{
	return slot * EP_SOCKET_MEMBERS + member;
}

/*
 * Per-client limits (source_connections, source_rate). A client is its
 * address cut to a prefix (IPv4 /32, IPv6 /64 by default, per service), so
 * one host of an IPv6 network cannot dodge a limit by using a new address.
 */

/*
 * Processes (workers, and the next process of an upgrade) that count open
 * connections, each in its own slot of every ep_source_count. A slot is
 * claimed by putting a socket the process keeps open for its lifetime in
 * ep_source_owners at the slot's index: a process that dies closes it, the
 * kernel drops it from the SOCKMAP, and the slot reads as free. The next
 * process to claim a slot first zeroes every free slot's counts (reclaim), and
 * every counting process does so every so often, so a crashed worker's
 * connections are not counted forever.
 */
#define EP_SOURCE_OWNERS 32

/* ep_source_conns / ep_source_rate key: a client of a service. */
struct ep_source_key {
	__u32 service;
	__u8 family;     /* AF_INET or AF_INET6 */
	__u8 prefix_len; /* the service's grouping prefix; addr is masked to it */
	__u16 reserved;
	__u8 addr[16];   /* network byte order; IPv4 uses the first 4 bytes */
};

/* ep_limits: service id -> its per-client limits; all zero: none (the program does nothing more). */
struct ep_source_limit {
	__u32 connections; /* open connections per client, whole instance; 0: unlimited */
	__u8 prefix_v4;    /* grouping prefix length of IPv4 clients (1-32) */
	__u8 prefix_v6;    /* of IPv6 clients (1-128) */
	__u16 flags;       /* EP_SOURCE_LIMIT_* */
	/*
	 * New connections per client as a GCRA (the token bucket as a virtual
	 * clock, RFC 2697's idea without the per-token state): one connection
	 * per interval, and up to tolerance / interval + 1 back to back.
	 * interval 0: unlimited.
	 */
	__u64 rate_interval_ns;
	__u64 rate_tolerance_ns;
};

/* The service has sources in ep_limit_exempt (skip the trie walk otherwise). */
#define EP_SOURCE_LIMIT_EXEMPT 1

/* ep_source_conns value: open connections of one client, per owner slot. */
struct ep_source_count {
	__u64 owner[EP_SOURCE_OWNERS]; /* 64-bit: the atomics clang emits for -mcpu=v1 */
};

/* Per-CPU, per-service: SYNs the program refused because of a per-client limit. */
struct ep_limit_counters {
	__u64 connections; /* the client had source_connections open already */
	__u64 rate;        /* the client exceeded source_rate */
};

/*
 * The context of ep_source (BPF_PROG_TYPE_SYSCALL), run by user space with
 * BPF_PROG_TEST_RUN; the kernel copies it back, `result` filled in.
 * ADD: add delta (+1 at accept, -1 at close; never below 0) to key's count in
 * slot `owner`; result: the client's count over all owners afterwards.
 * RECLAIM: zero the slots whose bits are set in `owner` (a mask: their
 * processes are gone) in every entry; result: how many entries had a count there.
 * RATE: charge one new connection to key's rate (source_rate of key.service);
 * result 1 when the client is over it (for clients a PROXY header names).
 */
struct ep_source_op {
	struct ep_source_key key;
	__u32 op; /* EP_SOURCE_OP_* */
	__u32 owner; /* slot; for RECLAIM a mask of slots (EP_SOURCE_OWNERS <= 32) */
	__s32 delta;
	__u32 result;
};
#define EP_SOURCE_OP_ADD 1
#define EP_SOURCE_OP_RECLAIM 2
#define EP_SOURCE_OP_RATE 3

#endif
