// The compiled dispatcher (build/build.ts puts it in dist/); `bun build
// --compile` embeds it in the executable.
import objectPath from "../../dist/dispatcher.bpf.o" with { type: "file" };

/** The ELF bytes of bpf/dispatcher.bpf.c as built with this edgeproxy. */
export async function dispatcherImage(): Promise<Uint8Array> {
  return new Uint8Array(await Bun.file(objectPath).arrayBuffer());
}
