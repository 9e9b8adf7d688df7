// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Part of bpf/dispatcher.bpf.c (included at its end, one object): the
 * sk_reuseport program attached to edgeproxy's TCP reuseport groups, and
 * the maps of its member selection. Structs shared with TypeScript are in
 * dispatcher.h.
 */
#ifndef EDGEPROXY_REUSEPORT_H
#define EDGEPROXY_REUSEPORT_H

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
 * takes it out at its cap: the program tries the 4-tuple hash's position,
 * then (empty) walks every position from a second one the hash gives, so a
 * newcomer reaches a worker with room whenever there is one, and a full
 * worker's share spreads over the others instead of doubling its neighbour's.
 *
 * Why here, and why a SOCKHASH:
 *  - Selecting in ep_dispatch instead (BPF_SK_LOOKUP_F_NO_REUSEPORT, hashing
 *    over the SOCKMAP members) would need a member entry per worker (there
 *    are EP_SOCKET_MEMBERS = 4 per slot, for up to 256 workers), changing
 *    ep_sockets' layout for every pinned dispatcher; an upgrade's successor
 *    overwrites those entries while the old process still serves.
 *  - Closing the full worker's listener and re-joining the group below the
 *    resume mark would move its queue away (migration) but churn the
 *    listener, its fd and its SOCKMAP entry on every cap crossing, and the
 *    group dies when every worker is full at once (its port may be taken).
 *  - Here the kernel asks for exactly this choice, per group, for new and
 *    migrating connections alike. BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, made for
 *    it, refuses a socket that is in a SOCKMAP (both use sk_user_data:
 *    reuseport_array_update_check() gives EBUSY), and every listener is in
 *    ep_sockets; bpf_sk_select_reuseport() takes a SOCKHASH too. A closing
 *    socket leaves the SOCKHASH by itself (sock_map_close()) before its queue
 *    migrates, so a closed member is never selected.
 *
 * Two tiers. A worker leaves at its cap only after it has accepted the
 * connection that reaches it, and a SYN the kernel gave it meanwhile (hashed
 * to it, still in its queue) finds it full and is reset by the worker. So a
 * worker leaves the first tier earlier, at a soft mark (its cap minus a small
 * headroom, admission.ts), and stays in the second until its cap: the
 * selector tries the first tier (hash position, then the walk) and only when
 * no worker is below its soft mark the second the same way. While any worker
 * is below its soft mark a worker inside its headroom gets nothing new, and
 * what the kernel had already given it fits in its headroom unless that is
 * more than the headroom (a burst's share of one worker: admission.ts says
 * what was measured). A worker below
 * its soft mark is at position p (tier 1) and EP_REUSE_MAX_MEMBERS + p
 * (tier 2, every worker with room), one inside its headroom only at the
 * second: the key layout is unchanged, and a program that predates the tiers
 * sees a worker inside its headroom as full (it still refuses nothing another
 * worker below its soft mark can take).
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
	__uint(max_entries, EP_REUSE_TIERS * EP_REUSE_MAX_ENTRIES);
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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EP_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct ep_reuse_tier_counters);
} ep_reuse_tier_counters SEC(".maps");

/*
 * One step of ep_reuse_pick's walk: offer position `p` of the group and tier
 * `slot` names (group | tier base << 32). -1: it took the connection; else
 * the next position to offer, wrapping past `members` and passing over
 * `first`. A global function of its own, so the verifier checks a step once,
 * not once per step of the walk: it walks all EP_REUSE_MAX_MEMBERS steps of
 * the loop (members is unknown to it), and with the step inline (two modulos,
 * ~50 instructions) that was ~13,000 processed instructions and ~5 ms of a
 * cold start's program load.
 */
__noinline long ep_reuse_step(struct sk_reuseport_md *md, __u64 slot, __u64 p, __u64 members, __u64 first)
{
	struct ep_reuse_key key = { .group = (__u32)slot, .position = (__u32)(slot >> 32) + p };

	if (bpf_sk_select_reuseport(md, &ep_reuse_members, &key, 0) == 0)
		return -1;
	if (++p >= members)
		p = 0;
	if (p == first && ++p >= members)
		p = 0;
	return p;
}

/*
 * Select a member of one tier (positions base .. base + members - 1): the
 * hashed position `first`, else every other one from `start` (`walk` is
 * first | start << 16: a BPF function takes at most five arguments). 0: the
 * hashed one, 1: another, -1: none is offered.
 *
 * A global function, not inlined: the verifier checks a global function once,
 * on its own, with its arguments unknown (Linux 5.6, commit 51c39bb1d5d1
 * "bpf: Introduce function-by-function verification"), where two inlined copies of this 256-step walk cost it
 * ~131,000 processed instructions and 100-400 ms of a cold start's program
 * load; once: ~13,000 and ~10 ms; with the step a global function too
 * (ep_reuse_step), ~4,600 and ~3 ms.
 */
__noinline int ep_reuse_pick(struct sk_reuseport_md *md, __u32 group, __u32 members, __u32 walk, __u32 base)
{
	struct ep_reuse_key k = { .group = group }, *key = &k;
	/* 64-bit: no zero-extension pair after each 32-bit step in the loop (clang's default -mcpu=v1 has no 32-bit subregisters). */
	__u64 first = walk & 0xffff, p = walk >> 16, n = members, slot = group | (__u64)base << 32, i;
	long next;

	key->position = base + first;
	if (bpf_sk_select_reuseport(md, &ep_reuse_members, key, 0) == 0)
		return 0;
	if (n < 2)
		return -1;
	/* The others in order from start (walk >> 16), wrapping, passing over `first`. */
	for (i = 0; i < EP_REUSE_MAX_MEMBERS - 1 && i < n - 1; i++) {
		next = ep_reuse_step(md, slot, p, n, first);
		if (next < 0)
			return 1;
		p = next;
	}
	return -1;
}

SEC("sk_reuseport/migrate")
int ep_migrate(struct sk_reuseport_md *md)
{
	struct bpf_sock *sk = md->sk;
	struct ep_reuse_counters *cnt;
	struct ep_reuse_group *group;
	struct ep_reuse_key key = {};
	__u32 members, first, start, service;
	int picked, migrating = md->migrating_sk != NULL;

	if (!sk || sk->protocol != IPPROTO_TCP)
		return SK_PASS;
#ifdef EP_TEST_MIGRATE_VARIANT
	/*
	 * test/program-upgrade.test.ts: another ep_migrate with the same
	 * ep_dispatch (so the same dispatcher tag) and the same verdicts: a
	 * listener with no port and no cookie record is passed below as well.
	 */
	if (!sk->src_port && !bpf_get_socket_cookie(sk))
		return SK_PASS;
#endif
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
	/*
	 * The hashed worker is below its soft mark, or the rest from a second
	 * position drawn uniformly among the OTHER positions, so one worker's
	 * share spreads evenly (a start drawn over all positions would land its
	 * own draws on the next one, doubling that neighbour's share).
	 */
	start = first;
	if (members > 1) {
		start = first + 1 + md->hash / members % (members - 1);
		if (start >= members)
			start -= members;
	}
	picked = ep_reuse_pick(md, key.group, members, first | start << 16, 0);
	if (picked >= 0) {
		if (cnt) {
			if (migrating)
				cnt->migrated++;
			else if (picked > 0)
				cnt->redirected++;
		}
		return SK_PASS;
	}
	/* No worker is below its soft mark: one inside its headroom, with room. */
	if (ep_reuse_pick(md, key.group, members, first | start << 16, EP_REUSE_MAX_MEMBERS) >= 0) {
		if (migrating) {
			if (cnt)
				cnt->migrated++;
		} else {
			struct ep_reuse_tier_counters *tier = bpf_map_lookup_elem(&ep_reuse_tier_counters, &service);

			if (tier)
				tier->second++;
		}
		return SK_PASS;
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

#endif
