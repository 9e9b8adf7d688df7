// The tcp engine's origin addresses as it uses them per connection: the
// sockaddr for connect(2) and the access log's "ip:port", each made once per
// endpoint and port, not per connection.
import { endpointString } from "../log/line";
import { encodeSockaddr, type Endpoint } from "../system/sockaddr";

/** An origin address as the engine uses it: connect(2)'s sockaddr and the access log's text. */
export interface Origin {
  readonly sockaddr: Uint8Array;
  readonly text: string;
}

/** Origins that follow the edge port can name every port: this many per endpoint, then emptied. */
const PORTS_PER_ENDPOINT = 4096;

export class OriginAddresses {
  /** Weak by the endpoint's address bytes, so a removed endpoint's entries go with it. */
  private readonly byAddr = new WeakMap<Uint8Array, Map<number, Origin>>();

  /**
   * Keyed by the endpoint's address bytes (the same array for the endpoint's
   * life, see WorkerEndpoint.addr) and then the port: no key text built per
   * connection. (`t` is a new object per pick, so formatEndpoint's WeakMap
   * would miss and insert once per connection.)
   */
  get(t: Endpoint): Origin {
    let ports = this.byAddr.get(t.addr);
    if (!ports) this.byAddr.set(t.addr, (ports = new Map()));
    let o = ports.get(t.port);
    if (!o) {
      if (ports.size >= PORTS_PER_ENDPOINT) ports.clear();
      ports.set(t.port, (o = { sockaddr: encodeSockaddr(t), text: endpointString(t) }));
    }
    return o;
  }
}
