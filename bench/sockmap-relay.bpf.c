// SPDX-License-Identifier: GPL-2.0
// The kernel half of bench/sockmap-relay.ts: each socket of a spliced pair
// is in splice_socks under its descriptor's number, and splice_peer maps its
// cookie to its peer's number. An sk_skb verdict program (attached to the
// SOCKMAP: Documentation/bpf/map_sockmap.rst, BPF_SK_SKB_VERDICT) runs for
// every skb a member receives and redirects it to the egress of the peer
// (bpf_sk_redirect_map, flags 0: the peer sends it). A socket with no peer
// entry keeps its bytes (SK_PASS: user space reads them).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} splice_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} splice_peer SEC(".maps");

/* Debian 12's libbpf knows no "sk_skb/verdict" section: plain "sk_skb"
 * gives the program type; the loader attaches it as BPF_SK_SKB_VERDICT. */
SEC("sk_skb")
int splice_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u32 *peer = bpf_map_lookup_elem(&splice_peer, &cookie);

	if (!peer)
		return SK_PASS;
	return bpf_sk_redirect_map(skb, &splice_socks, *peer, 0);
}

char LICENSE[] SEC("license") = "GPL";
