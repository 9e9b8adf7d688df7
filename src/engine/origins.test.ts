import { describe, expect, test } from "bun:test";
import { OriginAddresses } from "./origins";
import { decodeSockaddr } from "../system/sockaddr";
import { parseAddress } from "../config/address";

describe("OriginAddresses", () => {
  test("one sockaddr and text per endpoint and port, made once; a port past the bound is still right", () => {
    const o = new OriginAddresses();
    const v4 = parseAddress("127.0.0.1")!;
    const v6 = parseAddress("2001:db8::9")!;
    const a = o.get({ family: 4, addr: v4, port: 9000 });
    expect(a.text).toBe("127.0.0.1:9000");
    expect(decodeSockaddr(a.sockaddr)).toMatchObject({ family: 4, port: 9000 });
    // A new Endpoint object per pick (as EndpointSet.pick makes them): the same entry.
    expect(o.get({ family: 4, addr: v4, port: 9000 })).toBe(a);
    expect(o.get({ family: 4, addr: v4, port: 9001 }).text).toBe("127.0.0.1:9001");
    expect(o.get({ family: 6, addr: v6, port: 443 }).text).toBe("[2001:db8::9]:443");
    for (let port = 1; port <= 5000; port++) expect(o.get({ family: 4, addr: v4, port }).text).toBe(`127.0.0.1:${port}`);
    expect(decodeSockaddr(o.get({ family: 4, addr: v4, port: 9000 }).sockaddr)).toMatchObject({ family: 4, port: 9000 });
  });
});
