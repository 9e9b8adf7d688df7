// libc's capability calls (capget(2), capset(2), prctl(2)). Logic-free on
// purpose: what they mean for edgeproxy lives in capabilities.ts.
import { FFIType } from "bun:ffi";

const { i32, u64, ptr } = FFIType;

export const capabilitySymbols = {
  capget: { args: [ptr, ptr], returns: i32 },
  capset: { args: [ptr, ptr], returns: i32 },
  prctl: { args: [i32, u64, u64, u64, u64], returns: i32 },
} as const;
