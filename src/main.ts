#!/usr/bin/env bun
import { run } from "./cli/main";

process.exit(await run(process.argv.slice(2)));
