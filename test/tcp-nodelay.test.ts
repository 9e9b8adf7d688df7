// A request the client sends in two writes, answered only once both came:
// on a kept connection each round takes milliseconds through a tcp service
// on either engine. Without TCP_NODELAY (tcp(7)) the relay's second small
// write waits for the origin's ACK of the first, which the origin's delayed
// ACK holds back ~40 ms, as nginx's tcp_nodelay and HAProxy avoid.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { workdir, writeConfig } from "./helpers/pools";

const f = proxyFixture();
const ORIGIN_PORT = 9000;
const ROUNDS = 30;

describe("small writes that follow unacknowledged ones (tcp)", () => {
  test.each(["epoll", "bun"] as const)("%s: a request in two writes is answered in milliseconds, round after round", async (engine) => {
    // The origin answers a line once its newline came: the request's second write.
    f.servers.push(
      Bun.listen<{ got: string }>({
        hostname: "127.0.0.1",
        port: ORIGIN_PORT,
        socket: {
          open: (s) => void (s.data = { got: "" }),
          data(s, d) {
            s.data.got += d.toString();
            if (s.data.got.endsWith("\n")) {
              s.data.got = "";
              s.write("ok\n");
            }
          },
        },
      }),
    );
    const w = workdir();
    try {
      writeConfig(w, { origins: [`127.0.0.1:${ORIGIN_PORT}`], ports: "7000", extra: `engine = "${engine}"` });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      let answered: () => void = () => {};
      let sock: Socket | undefined;
      await new Promise<void>((resolve, reject) => {
        Bun.connect({
          hostname: "192.0.2.1",
          port: 7000,
          socket: {
            open: (s) => {
              sock = s;
              resolve();
            },
            data: () => answered(),
            connectError: (_s, e) => reject(e),
          },
        }).catch(reject);
      });
      const took: number[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        const done = new Promise<void>((r) => (answered = r));
        const t0 = performance.now();
        sock!.write("first half, ");
        // The second half as a write of its own, once the first went out.
        await Bun.sleep(2);
        sock!.write("second half\n");
        const timer = setTimeout(() => answered(), 2_000);
        await done;
        clearTimeout(timer);
        took.push(performance.now() - t0);
      }
      sock!.end();
      took.sort((a, b) => a - b);
      // 2 ms of our own wait, and loopback's round trips: far below a delayed ACK (~40 ms).
      expect(took[ROUNDS >> 1]!).toBeLessThan(20);
    } finally {
      w.done();
    }
  }, 30_000);
});
