// Validate deploy/kubernetes/*.yaml against the Kubernetes OpenAPI schemas,
// offline: kubernetes-models (npm) carries them as JSON schemas with ajv.
// Run through deploy/validate.sh, which installs it outside the project.
//   bun deploy/validate.ts MODELS_DIR FILE...
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { loadConfig } from "../src/config/file";

const [modelsDir, ...files] = process.argv.slice(2);
if (!modelsDir || files.length === 0) {
  console.error("usage: bun deploy/validate.ts MODELS_DIR FILE...");
  process.exit(2);
}
const models = join(modelsDir, "node_modules", "kubernetes-models");
let failed = 0;
for (const file of files) {
  const docs = Bun.YAML.parse(readFileSync(file, "utf8"));
  for (const doc of (Array.isArray(docs) ? docs : [docs]).filter(Boolean)) {
    const { apiVersion, kind } = doc as { apiVersion: string; kind: string };
    const name = `${file}: ${kind} ${doc.metadata?.name}`;
    // apps/v1 -> apps/v1/DaemonSet; v1 -> v1/ConfigMap
    const mod = await import(join(models, apiVersion, kind)).catch(() => undefined);
    const Model = mod?.[kind];
    if (!Model) {
      console.log(`${name}: no schema for ${apiVersion} ${kind}`);
      failed++;
      continue;
    }
    try {
      new Model(doc).validate();
      console.log(`${name}: valid (${apiVersion})`);
      // A ConfigMap's edgeproxy.toml is checked as edgeproxy itself reads it.
      const toml = kind === "ConfigMap" ? doc.data?.["edgeproxy.toml"] : undefined;
      if (toml !== undefined) {
        const path = join(tmpdir(), `edgeproxy-validate-${process.pid}.toml`);
        await Bun.write(path, toml);
        const config = await loadConfig(path).finally(() => rmSync(path, { force: true }));
        console.log(`${name}: edgeproxy.toml valid (${config.services.length} service(s))`);
      }
    } catch (e) {
      console.log(`${name}: INVALID: ${(e as Error).message}`);
      failed++;
    }
  }
}
process.exit(failed ? 1 : 0);
