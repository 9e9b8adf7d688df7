import { describe, expect, test } from "bun:test";
import { Ejection, PortEjections } from "./eject";

const cfg = { failures: 3, durationMs: 30_000, baseMs: 1_000 };

describe("Ejection", () => {
  test("failures in a row eject; a success in between restarts the count", () => {
    const e = new Ejection();
    expect([e.failed(0, cfg), e.failed(1, cfg)]).toEqual([0, 0]);
    e.succeeded();
    expect([e.failed(2, cfg), e.failed(3, cfg)]).toEqual([0, 0]);
    expect(e.failed(4, cfg)).toBe(1_000);
    expect(e.out(4)).toBe(true);
    expect(e.out(1_004)).toBe(false);
  });

  test("the time out doubles on repeats up to the maximum; failures while out do not extend it", () => {
    const e = new Ejection();
    let now = 0;
    const eject = () => {
      let ms = 0;
      for (let i = 0; i < 3; i++) ms = e.failed(now, cfg);
      return ms;
    };
    const got: number[] = [];
    for (let i = 0; i < 7; i++) {
      const ms = eject();
      got.push(ms);
      expect(e.failed(now + 1, cfg)).toBe(0);
      expect(e.until).toBe(now + ms);
      now += ms; // back exactly when it ends, and failing again
    }
    expect(got).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
  });

  test("a period of success (the maximum since the last ejection ended) starts the backoff over", () => {
    const e = new Ejection();
    const eject = (now: number) => [e.failed(now, cfg), e.failed(now, cfg), e.failed(now, cfg)][2];
    expect(eject(0)).toBe(1_000);
    expect(eject(1_000)).toBe(2_000);
    expect(eject(3_000 + 29_999)).toBe(4_000);
    expect(eject(36_999 + 30_000)).toBe(1_000);
  });

  test("no overflow however often it repeats", () => {
    const e = new Ejection();
    e.level = 5_000;
    expect(e.failed(0, { ...cfg, failures: 1 })).toBe(30_000);
  });
});

describe("PortEjections", () => {
  test("state per port: failures on one port do not touch another", () => {
    const p = new PortEjections(cfg);
    for (let i = 0; i < 3; i++) p.failed(7002, 0);
    expect(p.out(7002, 1)).toBe(true);
    expect(p.out(7001, 1)).toBe(false);
    expect(p.ejected(1)).toEqual([{ port: 7002, until: 1_000 }]);
    expect(p.nextEnd(1)).toBe(1_000);
    expect(p.ejections).toBe(1);
  });

  test("a success drops a port's entry once it holds nothing; a recently ejected one is kept for its backoff", () => {
    const p = new PortEjections(cfg);
    p.failed(1, 0);
    p.succeeded(1, 0);
    expect(p.size).toBe(0);
    for (let i = 0; i < 3; i++) p.failed(2, 0);
    p.succeeded(2, 2_000);
    expect(p.size).toBe(1);
    p.succeeded(2, 1_000 + 30_000);
    expect(p.size).toBe(0);
  });

  test("bounded: beyond the cap the least recently failed port is forgotten, and counted", () => {
    const p = new PortEjections({ ...cfg, failures: 1 }, 4);
    for (let port = 1; port <= 4; port++) p.failed(port, 0);
    p.failed(1, 0); // touched: now the most recent
    for (let port = 5; port <= 1_000; port++) p.failed(port, 0);
    expect(p.size).toBe(4);
    expect(p.evicted).toBe(996);
    expect(p.ejected(0).map((e) => e.port)).toEqual([997, 998, 999, 1_000]);
  });
});
