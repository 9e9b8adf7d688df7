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

/* The service's access rules allow this client? */
static __always_inline int allowed(struct bpf_sk_lookup *ctx, __u32 gen, __u32 service)
{
	__u32 idx = gen * EP_MAX_SERVICES + service;
	struct ep_access_key key = {};
	__u32 *flags, *verdict;

	flags = bpf_map_lookup_elem(&ep_service_flags, &idx);
	if (!flags || !(*flags & EP_SERVICE_HAS_RULES))
		return 1;
	key.gen = gen;
	key.family = ctx->family;
	key.service = bpf_htonl(service);
	if (ctx->family == AF_INET) {
		key.prefixlen = EP_ACCESS_KEY_HEADER_BITS + 32;
		__builtin_memcpy(key.addr, &ctx->remote_ip4, 4);
	} else {
		key.prefixlen = EP_ACCESS_KEY_HEADER_BITS + 128;
		__builtin_memcpy(key.addr, ctx->remote_ip6, 16);
	}
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

/*
 * ---- Member selection in a TCP reuseport group (the connection cap) ----
 *
 * Attached to every TCP reuseport group edgeproxy listens in, for its type:
 * with a BPF_SK_REUSEPORT_SELECT_OR_MIGRATE program attached, a closing
 * listener's queued and half-open connections move to another member of the
 * group instead of being reset (net/core/sock_reuseport.c,
 * reuseport_migrate_sock(); the alternative, net.ipv4.tcp_migrate_req, is a
 * namespace-wide sysctl).
 *
 * It also selects the member for every new connection. ep_dispatch assigns
 * any registered member, and the kernel then runs reuseport selection over
 * the whole group (inet_lookup_run_sk_lookup() -> inet_lookup_reuseport() ->
 * reuseport_select_sock(), which runs this program). Without a selection the
 * kernel hashes over every listening member, a worker at its connection cap
 * included, which then resets what it is given. So each worker registers its
 * listener in ep_reuse_members while it has room, at its own position, and
 * takes it out at its cap: the program starts at the 4-tuple hash's position
 * and takes the first member present, so a newcomer reaches a worker with
 * room whenever there is one.
 *
 * Why here, and why a SOCKHASH:
 *  - Selecting in ep_dispatch instead (BPF_SK_LOOKUP_F_NO_REUSEPORT over the
 *    SOCKMAP members) would need one member entry per worker (4 today, up to
 *    256 workers), and an upgrade's successor overwrites the members; closing
 *    and re-opening the full worker's listener would churn the group and its
 *    SOCKMAP entry on every cap crossing. The reuseport program sees the
 *    group the kernel already chose, and is where the kernel asks.
 *  - BPF_MAP_TYPE_REUSEPORT_SOCKARRAY refuses a socket that is in a SOCKMAP
 *    (both use sk_user_data: reuseport_array_update_check() gives EBUSY), and
 *    every listener is in ep_sockets. bpf_sk_select_reuseport() takes a
 *    SOCKHASH too; a closing socket leaves it by itself (sock_map_close()),
 *    before its queue migrates, so a closed member is never selected.
 *
 * With no member present (every worker of the group at its cap) a new
 * connection is refused here (SK_DROP: the kernel answers the SYN with a
 * reset, counted as `full`), as ep_dispatch refuses one with no socket. A
 * migrating connection is never refused: SK_PASS without a selection leaves
 * it to the kernel's hash over the remaining listeners. A group with no
 * ep_reuse_groups entry (registered by an older edgeproxy) gets the kernel's
 * hash as before.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, EP_REUSE_MAX_ENTRIES);
	__type(key, struct ep_reuse_key);
	__type(value, __u64);
} ep_reuse_members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EP_SOCKET_SLOTS);
	__type(key, __u32);
	__type(value, struct ep_reuse_group);
} ep_reuse_groups SEC(".maps");

/*
 * Listener cookie -> ep_reuse_group_id(). A closing listener has given its
 * port back (inet_put_port() zeroes skc_num, which bpf_sock's src_port reads)
 * by the time its queue migrates, so the group of a migration is found by
 * the listener's cookie. Stale entries (a killed worker's) are pruned by the
 * control plane when it registers (steering.ts).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EP_REUSE_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u32);
} ep_reuse_listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EP_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct ep_reuse_counters);
} ep_reuse_counters SEC(".maps");

SEC("sk_reuseport/migrate")
int ep_migrate(struct sk_reuseport_md *md)
{
	struct bpf_sock *sk = md->sk;
	struct ep_reuse_counters *cnt;
	struct ep_reuse_group *group;
	struct ep_reuse_key key = {};
	__u32 members, first, i, service;
	int migrating = md->migrating_sk != NULL;

	if (!sk || sk->protocol != IPPROTO_TCP)
		return SK_PASS;
	if (sk->src_port) {
		key.group = ep_reuse_group_id(sk->family == AF_INET6, sk->src_port);
	} else {
		__u64 cookie = bpf_get_socket_cookie(sk);
		__u32 *id = bpf_map_lookup_elem(&ep_reuse_listeners, &cookie);

		if (!id)
			return SK_PASS;
		key.group = *id;
	}
	group = bpf_map_lookup_elem(&ep_reuse_groups, &key.group);
	if (!group || !group->members)
		return SK_PASS;
	members = group->members;
	if (members > EP_REUSE_MAX_MEMBERS)
		members = EP_REUSE_MAX_MEMBERS;
	service = group->service;
	cnt = bpf_map_lookup_elem(&ep_reuse_counters, &service);
	first = md->hash % members;
	for (i = 0; i < EP_REUSE_MAX_MEMBERS && i < members; i++) {
		key.position = first + i;
		if (key.position >= members)
			key.position -= members;
		if (bpf_sk_select_reuseport(md, &ep_reuse_members, &key, 0) == 0) {
			if (cnt) {
				if (migrating)
					cnt->migrated++;
				else if (i)
					cnt->redirected++;
			}
			return SK_PASS;
		}
	}
	if (migrating) {
		if (cnt)
			cnt->migrated_unselected++;
		return SK_PASS;
	}
	if (cnt)
		cnt->full++;
	return SK_DROP;
}

char _license[] SEC("license") = "Dual BSD/GPL";
