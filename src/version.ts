declare const EDGEPROXY_VERSION: string | undefined;

/** Set at build time by build/build.ts (--define); "dev" when run from source. */
export const VERSION: string = typeof EDGEPROXY_VERSION === "string" ? EDGEPROXY_VERSION : "0.1.0-dev";
