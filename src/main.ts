#!/usr/bin/env bun
import { run } from "./cli/main";
import { startPhase } from "./system/starttrace";

startPhase("modules evaluated");

process.exit(await run(process.argv.slice(2)));
