// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * edgeproxy's sk_lookup dispatcher: (protocol, destination ip, destination
 * port) -> service -> listening socket.
 *
 * See Documentation/bpf/prog_sk_lookup.rst: the program runs when the kernel
 * looks for a listening TCP socket or an unconnected UDP socket for a new
 * packet. SK_PASS without an assignment lets the normal lookup continue;
 * SK_PASS after bpf_sk_assign() delivers to the assigned socket (and the
 * kernel then applies SO_REUSEPORT selection within its group); SK_DROP
 * refuses the packet.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "dispatcher.h"

#define AF_INET 2
#define AF_INET6 10

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ep_state);
} ep_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	/* Grown by the loader before load when a config needs more. */
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ep_prefix_key);
	__type(value, struct ep_prefix_table);
} ep_prefixes SEC(".maps");

/*
 * Full-length prefixes only, keyed like ep_prefixes (prefixlen = header + 32
 * or 128), both generations; consulted when ep_state says so. The trie keeps
 * them too, so a program that predates this map still finds every table.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ep_prefix_key);
	__type(value, struct ep_prefix_table);
} ep_hosts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * EP_RANGES_PER_GEN);
	__type(key, __u32);
	__type(value, struct ep_port_range);
} ep_ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, EP_SOCKET_SLOTS * EP_SOCKET_MEMBERS);
	__type(key, __u32);
	__type(value, __u64);
} ep_sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EP_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct ep_service_counters);
} ep_counters SEC(".maps");

/* Per generation: gen * EP_MAX_SERVICES + service -> EP_SERVICE_* flags. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * EP_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u32);
} ep_service_flags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, EP_MAX_ACCESS_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ep_access_key);
	__type(value, __u32);
} ep_access SEC(".maps");

/* Control-plane state (see dispatcher.h); pinned, never read here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EP_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct ep_service_info);
} ep_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 17);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ep_binding);
	__type(value, __u32);
} ep_bindings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EP_MAX_ACCESS_RULES / 2);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ep_rule);
	__type(value, __u32);
} ep_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EP_SOCKET_SLOTS * EP_SOCKET_MEMBERS);
	__type(key, __u32);
	__type(value, struct ep_owner);
} ep_owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EP_SOCKET_SLOTS);
#ifdef EP_TEST_INCOMPATIBLE
	/* test/program-upgrade.test.ts: a changed map definition, which an upgrade must refuse. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
#endif
	__type(key, __u32);
	__type(value, struct ep_group);
} ep_groups SEC(".maps");

#ifdef EP_TEST_VARIANT
/* test/program-upgrade.test.ts: a map only the variant has, which an upgrade creates and pins. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} ep_variant SEC(".maps");
#endif

/* The client's address as an ep_access_key (the deny/allow rules' and the limits' exemption key). */
static __always_inline void client_key(struct bpf_sk_lookup *ctx, __u32 gen, __u32 service, struct ep_access_key *key)
{
	key->gen = gen;
	key->family = ctx->family;
	key->service = bpf_htonl(service);
	if (ctx->family == AF_INET) {
		key->prefixlen = EP_ACCESS_KEY_HEADER_BITS + 32;
		__builtin_memcpy(key->addr, &ctx->remote_ip4, 4);
	} else {
		key->prefixlen = EP_ACCESS_KEY_HEADER_BITS + 128;
		__builtin_memcpy(key->addr, ctx->remote_ip6, 16);
	}
}

#include "sourcelimit.h"

/* The service's access rules allow this client? */
static __always_inline int allowed(struct bpf_sk_lookup *ctx, __u32 gen, __u32 service)
{
	__u32 idx = gen * EP_MAX_SERVICES + service;
	struct ep_access_key key = {};
	__u32 *flags, *verdict;

	flags = bpf_map_lookup_elem(&ep_service_flags, &idx);
	if (!flags || !(*flags & EP_SERVICE_HAS_RULES))
		return 1;
	client_key(ctx, gen, service, &key);
	verdict = bpf_map_lookup_elem(&ep_access, &key);
	if (verdict)
		return *verdict == EP_VERDICT_ALLOW;
	return !(*flags & EP_SERVICE_DEFAULT_DENY);
}

/* Index of the last range whose start <= port, in [first, first + count). */
static __always_inline int find_service(const struct ep_prefix_table *t, __u32 port, __u32 *service)
{
	__u32 lo = t->first, hi = t->first + t->count;
	struct ep_port_range *r;

	/* A table has at most 65536 ranges, so 17 halvings always finish. */
	for (int i = 0; i < 17 && hi - lo > 1; i++) {
		__u32 mid = lo + (hi - lo) / 2;

		r = bpf_map_lookup_elem(&ep_ranges, &mid);
		if (!r)
			return -1;
		if (r->start <= port)
			lo = mid;
		else
			hi = mid;
	}
	r = bpf_map_lookup_elem(&ep_ranges, &lo);
	if (!r)
		return -1;
	*service = r->service;
	return 0;
}

SEC("sk_lookup")
int ep_dispatch(struct bpf_sk_lookup *ctx)
{
	struct ep_prefix_key key = {};
	struct ep_prefix_table *table;
	struct ep_service_counters *cnt;
	struct ep_state *state;
	__u32 zero = 0, service = 0, slot, member, key_m;
	struct bpf_sock *sk;
	long err;

#ifdef EP_TEST_VARIANT
	/*
	 * test/program-upgrade.test.ts upgrades to this variant: other
	 * instructions, hence another tag, and the same verdicts. Ports are
	 * 1-65535, so no binding covers local port 0 and the full path passes
	 * such a packet too; only service 0's lookup count misses it.
	 */
	if (ctx->local_port == 0)
		return SK_PASS;
#endif
	state = bpf_map_lookup_elem(&ep_state, &zero);
	if (!state)
		return SK_PASS;

	key.gen = state->gen;
	key.protocol = ctx->protocol;
	key.family = ctx->family;
	if (ctx->family == AF_INET) {
		key.prefixlen = EP_PREFIX_KEY_HEADER_BITS + 32;
		__builtin_memcpy(key.addr, &ctx->local_ip4, 4);
	} else if (ctx->family == AF_INET6) {
		key.prefixlen = EP_PREFIX_KEY_HEADER_BITS + 128;
		__builtin_memcpy(key.addr, ctx->local_ip6, 16);
	} else {
		return SK_PASS;
	}

	table = NULL;
	if (state->flags & EP_STATE_HOSTS)
		table = bpf_map_lookup_elem(&ep_hosts, &key);
	if (!table)
		table = bpf_map_lookup_elem(&ep_prefixes, &key);
	if (table && find_service(table, ctx->local_port, &service) < 0)
		service = 0;
	if (service >= EP_MAX_SERVICES)
		service = 0;

	cnt = bpf_map_lookup_elem(&ep_counters, &service);
	if (cnt)
		cnt->lookups++;
	if (!service)
		return SK_PASS;

	if (!allowed(ctx, key.gen, service)) {
		if (cnt)
			cnt->denied++;
		return SK_DROP;
	}
	if (source_limited(ctx, service))
		return SK_DROP;

	slot = ep_socket_slot(service, ctx->protocol == IPPROTO_UDP, ctx->family == AF_INET6);
	/* Any registered member will do: they share one reuseport group. */
	sk = NULL;
	for (member = 0; member < EP_SOCKET_MEMBERS; member++) {
		key_m = ep_member_key(slot, member);
		sk = bpf_map_lookup_elem(&ep_sockets, &key_m);
		if (sk)
			break;
	}
	if (!sk) {
		/* Bound but no socket: refuse rather than reach another process's socket. */
		if (cnt)
			cnt->missing_socket++;
		return SK_DROP;
	}
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		if (cnt)
			cnt->assign_error++;
		return SK_DROP;
	}
	if (cnt)
		cnt->steered++;
	return SK_PASS;
}

/* The sk_reuseport program (migration and member selection): its own file. */
#include "reuseport.h"

char _license[] SEC("license") = "Dual BSD/GPL";
