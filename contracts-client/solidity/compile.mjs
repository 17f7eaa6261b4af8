// Compiles Vault.sol and TestToken.sol with the pinned solc-js into ../artifacts/<Name>.json ({abi, bytecode}).
// `node compile.mjs --check` compiles into a temporary directory and fails if the committed artifacts differ.
// Settings are fixed (optimizer 200 runs, evmVersion paris so chains without PUSH0 run it, no metadata hash)
// so that the output depends only on the sources and the solc version in package-lock.json.
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const here = dirname(fileURLToPath(import.meta.url));
const artifactsDir = join(here, "..", "artifacts");
const SOURCES = ["Vault.sol", "TestToken.sol"];
const CONTRACTS = { "Vault.sol": "Vault", "TestToken.sol": "TestToken" };

function compile() {
  const input = {
    language: "Solidity",
    sources: Object.fromEntries(SOURCES.map((f) => [f, { content: readFileSync(join(here, f), "utf8") }])),
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: "paris",
      metadata: { bytecodeHash: "none", appendCBOR: false },
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors ?? []).filter((e) => e.severity === "error");
  for (const e of output.errors ?? []) console.error(e.formattedMessage);
  if (errors.length > 0) throw new Error("solidity compilation failed");
  const files = {};
  for (const [file, name] of Object.entries(CONTRACTS)) {
    const c = output.contracts[file][name];
    const artifact = {
      contractName: name,
      compiler: `solc ${solc.version()}`,
      abi: c.abi,
      bytecode: `0x${c.evm.bytecode.object}`,
    };
    files[`${name}.json`] = JSON.stringify(artifact, null, 2) + "\n";
  }
  return files;
}

const check = process.argv.includes("--check");
const files = compile();
if (check) {
  const tmp = mkdtempSync(join(tmpdir(), "btfs-artifacts-"));
  let stale = [];
  try {
    for (const [name, text] of Object.entries(files)) {
      writeFileSync(join(tmp, name), text);
      let committed = null;
      try {
        committed = readFileSync(join(artifactsDir, name), "utf8");
      } catch {
        committed = null;
      }
      if (committed !== readFileSync(join(tmp, name), "utf8")) stale.push(name);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  if (stale.length > 0) {
    console.error(`stale artifacts: ${stale.join(", ")}; run \`node compile.mjs\` in contracts-client/solidity`);
    process.exit(1);
  }
  console.log("artifacts up to date");
} else {
  mkdirSync(artifactsDir, { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(artifactsDir, name), text);
  console.log(`wrote ${Object.keys(files).join(", ")} to ${artifactsDir}`);
}
