// Upgrading the pinned dispatcher's BPF program in place: new connections
// keep working throughout, bindings, sockets and counters are kept (the maps
// are the same kernel objects), and an object whose maps do not fit is refused.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { echoOrigin, exchange, text } from "./helpers/net";
import { compileDispatcherVariant } from "./helpers/bpf";

const f = proxyFixture();
let dir: string;
let variant: string;
let incompatible: string;
let migrateVariant: string;

const compileVariant = (define: string) => compileDispatcherVariant(dir, define);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "ep-upgrade-"));
  variant = compileVariant("EP_TEST_VARIANT");
  incompatible = compileVariant("EP_TEST_INCOMPATIBLE");
  migrateVariant = compileVariant("EP_TEST_MIGRATE_VARIANT");
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ep = async (...args: string[]) => {
  const r = await runEdgeproxy(args);
  if (r.code !== 0) throw new Error(`edgeproxy ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
};
const status = async () => JSON.parse(await ep("status", "--json"));
const service = (s: { services: { name: string }[] }, name: string) => s.services.find((x) => x.name === name) as unknown as { counters: { steered: number; lookups: number }; sockets: unknown[] };
const pins = () => join(process.env.EDGEPROXY_BPFFS!, "edgeproxy", readlinkSync("/proc/thread-self/ns/net").replace(/\D/g, ""));
const bpftool = (...args: string[]) => JSON.parse(Bun.spawnSync(["bpftool", "-j", ...args]).stdout.toString());

/** The id of the program the namespace's sk_lookup link runs, and of the one pinned as "prog". */
function programIds(): { link: number; pinned: number } {
  const inode = Number(readlinkSync("/proc/thread-self/ns/net").replace(/\D/g, ""));
  const links = bpftool("link", "show").filter((l: { netns_ino?: number }) => l.netns_ino === inode);
  expect(links).toHaveLength(1);
  return { link: links[0].prog_id, pinned: bpftool("prog", "show", "pinned", join(pins(), "prog")).id };
}

async function serveWeb(name = "web", ports = "5000-5099"): Promise<EdgeproxyProcess> {
  const origin = echoOrigin("127.0.0.1");
  f.servers.push(origin);
  // An instance each: two serves in one namespace each need their own admin socket.
  return EdgeproxyProcess.start(["--instance", name, "--name", name, "--ports", ports, "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`]);
}

/** n exchanges over ports base..base+span-1; the ones that did not come back intact. */
async function roundTrips(n: number, base = 5000, span = 100): Promise<string[]> {
  const bad: string[] = [];
  for (let i = 0; i < n; i++) {
    const got = await exchange("192.0.2.7", base + (i % span), `ping ${i}`);
    if (text(got) !== `ping ${i}`) bad.push(`${base + (i % span)}: ${text(got)}`);
  }
  return bad;
}

/**
 * New connections, 4 at a time, until stop() says so: bounded by `max`
 * connections and 20 s. Records each one's start so a window can be checked.
 */
function clientLoop(stop: () => boolean, max = 6000) {
  const state = { ok: 0, failures: [] as string[], starts: [] as number[] };
  const t0 = Date.now();
  let i = 0;
  const done = Promise.all(
    Array.from({ length: 4 }, async () => {
      while (!stop() && i < max && Date.now() - t0 < 20_000) {
        const n = i++;
        const port = 5000 + (n % 100);
        state.starts.push(performance.now());
        const got = await exchange("192.0.2.7", port, `conn ${n}`, 3000);
        if (text(got) === `conn ${n}`) state.ok++;
        else state.failures.push(`${port}: ${got.kind} ${text(got)}`);
      }
    }),
  );
  return { state, done };
}

describe("program upgrade", () => {
  test("under a continuous stream of new connections: none fails, the tag changes, bindings and counters are kept; back again", async () => {
    f.ep = await serveWeb();
    expect(await roundTrips(20)).toEqual([]);
    const before = await status();
    const bindings = await ep("bindings", "--json");
    const ids = programIds();
    expect(ids.link).toBe(ids.pinned);

    let stopping = false;
    const loop = clientLoop(() => stopping);
    while (loop.state.ok < 50) await Bun.sleep(5);
    const t0 = performance.now();
    const up = await runEdgeproxy(["upgrade-program", "--object", variant, "--json"]);
    const t1 = performance.now();
    const mark = loop.state.ok;
    while (loop.state.ok < mark + 200 && loop.state.failures.length === 0) await Bun.sleep(5);
    stopping = true;
    await loop.done;

    expect(up.stderr).toBe("");
    expect(up.code).toBe(0);
    const result = JSON.parse(up.stdout);
    expect(result).toMatchObject({ from: before.tag, created: ["ep_variant"], unchanged: false, dir: pins() });
    expect(result.to).not.toBe(before.tag);
    expect(loop.state.failures).toEqual([]);
    const during = loop.state.starts.filter((t) => t >= t0 && t <= t1).length;
    console.log(`program upgrade: ${loop.state.ok} connections, ${during} started while upgrade-program ran (${(t1 - t0).toFixed(0)} ms)`);
    expect(during).toBeGreaterThan(0);

    const after = await status();
    expect([after.tag, after.binaryTag]).toEqual([result.to, before.tag]);
    expect(await ep("bindings", "--json")).toBe(bindings);
    expect(service(after, "web").sockets).toEqual(service(before, "web").sockets);
    // Not reset: every connection of the loop was counted on top of what was there.
    const steered = (s: unknown) => BigInt(service(s as never, "web").counters.steered);
    expect(steered(after)).toBeGreaterThanOrEqual(steered(before) + BigInt(loop.state.ok));
    const now = programIds();
    expect(now.link).toBe(now.pinned);
    expect(now.link).not.toBe(ids.link);
    const listing = readdirSync(pins());
    expect(listing).toContain("ep_variant");
    expect(listing.filter((n) => n.startsWith("tmp_"))).toEqual([]);
    expect(await ep("status")).toContain(`program tag ${result.to}; this edgeproxy's is ${before.tag}`);

    // Still counting, with the new program.
    expect(await roundTrips(30)).toEqual([]);
    expect(steered(await status())).toBeGreaterThanOrEqual(steered(after) + 30n);

    // Back to the embedded program; a second time changes nothing.
    expect(JSON.parse(await ep("upgrade-program", "--json"))).toMatchObject({ from: result.to, to: before.tag, created: [], unchanged: false });
    expect(await ep("upgrade-program")).toBe(`dispatcher program unchanged (tag ${before.tag})\n`);
    const back = await status();
    expect([back.tag, back.binaryTag]).toEqual([before.tag, before.tag]);
    expect(await roundTrips(30)).toEqual([]);
    expect(steered(await status())).toBeGreaterThanOrEqual(steered(back) + 30n);
    expect(await ep("bindings", "--json")).toBe(bindings);
  }, 60_000);

  test("an object whose maps differ is refused with one line naming the map; nothing changes", async () => {
    const absent = await runEdgeproxy(["upgrade-program"]);
    expect([absent.code, absent.stderr]).toEqual([2, expect.stringMatching(/^edgeproxy: upgrade-program: edgeproxy is not loaded in this network namespace \(.*\)\n$/)]);

    f.ep = await serveWeb();
    const before = await status();
    const ids = programIds();
    const listing = readdirSync(pins()).sort();

    const r = await runEdgeproxy(["upgrade-program", "--object", incompatible]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/^edgeproxy: upgrade .*: refused, nothing changed: map ep_groups: map_flags 0x0 pinned, 0x1 in the new program; 'edgeproxy down' removes/);

    const notElf = join(dir, "not-elf.o");
    writeFileSync(notElf, "not an ELF file");
    for (const [args, code, pattern] of [
      [["upgrade-program", "--object", join(dir, "missing.o")], 2, /upgrade-program --object: cannot read .*missing\.o: ENOENT/],
      [["upgrade-program", "--object"], 2, /upgrade-program --object: needs an ELF file/],
      [["upgrade-program", "extra"], 2, /usage: edgeproxy upgrade-program \[--object FILE\]/],
      [["upgrade-program", "--object", notElf], 2, /upgrade-program --object: .*not-elf\.o is not an ELF file/],
    ] as const) {
      const bad = await runEdgeproxy([...args]);
      expect([bad.code, bad.stderr.trim().split("\n").length]).toEqual([code, 1]);
      expect(bad.stderr).toMatch(pattern);
    }

    const after = await status();
    expect(after.tag).toBe(before.tag);
    expect(service(after, "web")).toEqual({ ...service(before, "web"), counters: expect.anything() });
    expect(programIds()).toEqual(ids);
    expect(readdirSync(pins()).sort()).toEqual(listing);
    expect(await roundTrips(10)).toEqual([]);
  }, 30_000);

  test("a serve joining pins of a version with the same ep_dispatch but another ep_migrate and a map missing upgrades them", async () => {
    const first = await serveWeb("a", "5000-5099");
    try {
      const tagOf = (pin: string) => bpftool("prog", "show", "pinned", join(pins(), pin)).tag as string;
      const [dispatch, migrate] = [tagOf("prog"), tagOf("migrate")];
      // An older version as a new binary meets it: only ep_migrate differs (the reuseport selection),
      // and a map it uses is not pinned (ep_reuse_tier_counters, which the older one did not have).
      const up = JSON.parse(await ep("upgrade-program", "--object", migrateVariant, "--json"));
      expect(up.unchanged).toBe(false);
      expect([tagOf("prog"), tagOf("migrate") !== migrate]).toEqual([dispatch, true]);
      rmSync(join(pins(), "ep_reuse_tier_counters"));
      const st = await runEdgeproxy(["status"]);
      expect(st.code).toBe(2);
      expect(st.stderr).toContain("map ep_reuse_tier_counters: not pinned ('edgeproxy upgrade-program' adds it)");

      f.ep = await serveWeb("b", "7000-7099");
      expect(f.ep.stderr).toContain(`dispatcher program upgraded from tag ${dispatch} to ${dispatch} (maps kept; created ep_reuse_tier_counters)`);
      expect([tagOf("prog"), tagOf("migrate")]).toEqual([dispatch, migrate]);
      expect(readdirSync(pins())).toContain("ep_reuse_tier_counters");
      expect(await roundTrips(10, 5000)).toEqual([]);
      expect(await roundTrips(10, 7000)).toEqual([]);
      expect((await status()).tag).toBe(dispatch);
    } finally {
      expect(await first.stop()).toBe(0);
    }
  }, 30_000);

  test("control commands use a pinned program of another version; a serve that joins upgrades it and says so", async () => {
    const first = await serveWeb("a", "5000-5099");
    try {
      const embedded = (await status()).tag;
      const up = JSON.parse(await ep("upgrade-program", "--object", variant, "--json"));
      // bind does not upgrade: the variant keeps running, and the new binding steers to a's socket.
      await ep("bind", "a", "tcp", "192.0.2.0/24", "6100");
      expect(await roundTrips(3, 6100, 1)).toEqual([]);
      expect((await status()).tag).toBe(up.to);

      f.ep = await serveWeb("b", "7000-7099");
      expect(f.ep.stderr).toContain("dispatcher joined at");
      expect(f.ep.stderr).toContain(`dispatcher program upgraded from tag ${up.to} to ${embedded} (maps kept)`);
      const s = await status();
      expect([s.tag, s.binaryTag]).toEqual([embedded, embedded]);
      expect(await roundTrips(10, 5000)).toEqual([]);
      expect(await roundTrips(10, 7000)).toEqual([]);
      expect(await roundTrips(3, 6100, 1)).toEqual([]);
    } finally {
      expect(await first.stop()).toBe(0);
    }
  }, 30_000);
});
