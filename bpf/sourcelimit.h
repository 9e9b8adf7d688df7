/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-client limits of the sk_lookup dispatcher (source_connections,
 * source_rate; structs in dispatcher.h): their maps, the check the lookup
 * makes, and ep_source, the program user space counts connections with.
 * Included once, by dispatcher.bpf.c.
 */
#ifndef EDGEPROXY_SOURCELIMIT_H
#define EDGEPROXY_SOURCELIMIT_H

/*
 * Per-client limits (dispatcher.h). The counts and buckets are LRU maps: their
 * memory is fixed, and a flood of new clients evicts the least recently
 * seen ones instead of failing. An evicted count under-counts its client
 * until its connections close (a release never takes a count below 0).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EP_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct ep_source_limit);
} ep_limits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ep_source_key);
	__type(value, struct ep_source_count);
} ep_source_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ep_source_key);
	__type(value, __u64); /* GCRA theoretical arrival time, bpf_ktime_get_ns() clock */
} ep_source_rate SEC(".maps");

/* Slot -> a socket its owner keeps open while it lives (see EP_SOURCE_OWNERS). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, EP_SOURCE_OWNERS);
	__type(key, __u32);
	__type(value, __u64);
} ep_source_owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EP_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct ep_limit_counters);
} ep_limit_counters SEC(".maps");

/*
 * Sources the program does not limit: a service's accept_proxy prefixes (its
 * load balancers). Their connections carry many clients; user space limits
 * each by the client a PROXY header names (ep_source, ADD and RATE). Keyed
 * like ep_access, generation 0.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ep_access_key);
	__type(value, __u32);
} ep_limit_exempt SEC(".maps");

/*
 * The mask, in network order, of 32-bit word `word` of an address for a
 * prefix of plen bits: the word's first min(max(plen - 32 * word, 0), 32)
 * bits (a 64-bit shift: 32 bits keep the whole word, 0 none of it).
 */
static __always_inline __u32 prefix_word_mask(__u32 plen, __u32 word)
{
	__u32 bits = plen > 32 * word ? plen - 32 * word : 0;

	if (bits > 32)
		bits = 32;
	return bpf_htonl((__u32)(0xffffffff00000000ULL >> bits));
}

/*
 * The client's key: its address masked to the service's grouping prefix.
 * Masked a 32-bit word at a time, unrolled: a loop over the 16 bytes, with a
 * branch per byte, was ~8,000 of the ~10,000 instructions the verifier
 * processed for ep_dispatch (it walks the loop once for every state that
 * reaches it), ~5 ms of every cold start's program load.
 */
static __always_inline void source_key(struct bpf_sk_lookup *ctx, __u32 service, const struct ep_source_limit *lim, struct ep_source_key *key)
{
	__u32 plen, w[4] = {};

	key->service = service;
	key->family = ctx->family;
	if (ctx->family == AF_INET) {
		plen = lim->prefix_v4 > 32 ? 32 : lim->prefix_v4;
		w[0] = ctx->remote_ip4 & prefix_word_mask(plen, 0);
	} else {
		plen = lim->prefix_v6 > 128 ? 128 : lim->prefix_v6;
#pragma unroll
		for (int i = 0; i < 4; i++)
			w[i] = ctx->remote_ip6[i] & prefix_word_mask(plen, i);
	}
	key->prefix_len = plen;
	__builtin_memcpy(key->addr, w, 16);
}

/* Open connections of the client over every owner slot. */
static __always_inline __u64 source_total(const struct ep_source_count *c)
{
	__u64 sum = 0;

	for (int i = 0; i < EP_SOURCE_OWNERS; i++)
		sum += c->owner[i];
	return sum;
}

/*
 * Charge one new connection to the client's rate (GCRA): 1 when it is over.
 * Unlocked read-modify-write: SYNs of one client on several CPUs at once may
 * each pass on the same credit (a few more than the burst), never fewer.
 */
static __always_inline int rate_exceeded(struct ep_source_key *key, const struct ep_source_limit *lim)
{
	__u64 now = bpf_ktime_get_ns(), *tat, t;

	tat = bpf_map_lookup_elem(&ep_source_rate, key);
	if (!tat) {
		t = now + lim->rate_interval_ns;
		bpf_map_update_elem(&ep_source_rate, key, &t, BPF_NOEXIST);
		return 0;
	}
	t = *tat > now ? *tat : now;
	if (t - now > lim->rate_tolerance_ns)
		return 1;
	*tat = t + lim->rate_interval_ns;
	return 0;
}

/* Is the client one of the service's load balancers (accept_proxy)? */
static __always_inline int limit_exempt(struct bpf_sk_lookup *ctx, __u32 service)
{
	struct ep_access_key key = {};

	/* Exemptions are not per generation: gen stays 0. */
	client_key(ctx, 0, service, &key);
	return bpf_map_lookup_elem(&ep_limit_exempt, &key) != NULL;
}

/*
 * Per-client limits: 0 to go on, 1 to refuse. The connection count is only
 * read here: user space adds a connection when it accepts one and removes it
 * when it closes (ep_source), because a SYN is not a connection (it may be
 * retransmitted, or its handshake never complete). So up to a few SYNs
 * racing each other's accept can pass the limit here; user space refuses
 * those at accept. The rate is charged here, per SYN that gets this far.
 */
static __always_inline int source_limited(struct bpf_sk_lookup *ctx, __u32 service)
{
	struct ep_source_key key = {};
	struct ep_source_limit *lim;
	struct ep_source_count *count;
	struct ep_limit_counters *lc;

	lim = bpf_map_lookup_elem(&ep_limits, &service);
	if (!lim || (!lim->connections && !lim->rate_interval_ns))
		return 0;
	/* UDP: a datagram is not a new flow; the flow limit is user space's. */
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	if ((lim->flags & EP_SOURCE_LIMIT_EXEMPT) && limit_exempt(ctx, service))
		return 0;
	source_key(ctx, service, lim, &key);
	lc = bpf_map_lookup_elem(&ep_limit_counters, &service);
	if (lim->connections) {
		count = bpf_map_lookup_elem(&ep_source_conns, &key);
		if (count && source_total(count) >= lim->connections) {
			if (lc)
				lc->connections++;
			return 1;
		}
	}
	if (lim->rate_interval_ns && rate_exceeded(&key, lim)) {
		if (lc)
			lc->rate++;
		return 1;
	}
	return 0;
}

/*
 * Count a client's open connections (see struct ep_source_op): user space
 * runs this with BPF_PROG_TEST_RUN, one syscall per accept and per close,
 * and only for services with source_connections. The add is atomic, so every
 * worker (and the UDP thread) may count the same client at once.
 */
struct bpf_map;

struct reclaim_ctx {
	__u32 mask;
	__u32 touched;
};

static long reclaim_one(struct bpf_map *map, struct ep_source_key *key, struct ep_source_count *c, struct reclaim_ctx *rc)
{
	__u64 mask = rc->mask, any = 0, keep;

	/*
	 * No branch per slot: a slot of the mask is cleared with an atomic AND
	 * with 0 (its owner is gone: nothing else writes it), every other one
	 * gets an atomic AND with all ones, which leaves it as it is even while
	 * its live owner adds to it. One branch per slot cost the verifier
	 * ~2,400 of ep_source's 2,844 processed instructions and ~3 ms of a
	 * cold start's program load (it checks a callback for any number of
	 * calls); the reclaim only runs when an owner died.
	 */
	for (int i = 0; i < EP_SOURCE_OWNERS; i++) {
		keep = ((mask >> i) & 1) - 1; /* 0 for a slot of the mask, else all ones */
		any |= __sync_fetch_and_and(&c->owner[i], keep) & ~keep;
	}
	rc->touched += any != 0;
	return 0;
}

SEC("syscall")
int ep_source(struct ep_source_op *op)
{
	struct ep_source_key key;
	struct ep_source_count zero = {}, *c;
	struct reclaim_ctx rc;
	struct ep_source_limit *lim;
	__u64 t;
	__u32 o = op->owner;
	__u64 old;

	if (op->op == EP_SOURCE_OP_RECLAIM) {
		rc.mask = o;
		rc.touched = 0;
		bpf_for_each_map_elem(&ep_source_conns, reclaim_one, &rc, 0);
		op->result = rc.touched;
		return rc.touched;
	}
	if (o >= EP_SOURCE_OWNERS)
		return 0;
	__builtin_memcpy(&key, &op->key, sizeof(key));
	if (op->op == EP_SOURCE_OP_RATE) {
		lim = bpf_map_lookup_elem(&ep_limits, &key.service);
		op->result = lim && lim->rate_interval_ns && rate_exceeded(&key, lim);
		return op->result;
	}
	if (op->op != EP_SOURCE_OP_ADD)
		return 0;
	c = bpf_map_lookup_elem(&ep_source_conns, &key);
	if (!c) {
		if (op->delta <= 0) {
			op->result = 0;
			return 0;
		}
		/* EEXIST: another CPU made it first; the lookup finds theirs. */
		bpf_map_update_elem(&ep_source_conns, &key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&ep_source_conns, &key);
		if (!c)
			return 0;
	}
	if (op->delta > 0) {
		__sync_fetch_and_add(&c->owner[o], (__u64)op->delta);
	} else if (op->delta < 0) {
		/* Never below 0 (a count reclaimed or evicted meanwhile): compare and swap. */
		for (int i = 0; i < 8; i++) {
			old = c->owner[o];
			if (old == 0)
				break;
			if (__sync_val_compare_and_swap(&c->owner[o], old, old - 1) == old)
				break;
		}
	}
	t = source_total(c);
	op->result = t > 0xffffffff ? 0xffffffff : t;
	return op->result;
}

#endif
