//! The committed Solidity artifacts must be what the pinned solc makes of the sources: runs
//! `node compile.mjs --check`, which fails when they are stale. Needs Node and `npm ci` in `solidity/`; without
//! them the test fails (it does not skip).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn artifacts_match_sources() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("solidity");
    assert!(
        dir.join("node_modules/solc").exists(),
        "npm packages missing in {}: run `npm ci --prefix contracts-client/solidity`",
        dir.display()
    );
    let out = match Command::new("node").arg("compile.mjs").arg("--check").current_dir(&dir).output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run node (needed to check the Solidity artifacts): {e}"),
    };
    assert!(
        out.status.success(),
        "artifacts are stale or solc failed; run `node compile.mjs` in {}\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn embedded_artifacts_have_abi_and_bytecode() {
    use btfs_contracts_client::artifacts::{TEST_TOKEN_JSON, VAULT_JSON};
    for (name, json) in [("Vault", VAULT_JSON), ("TestToken", TEST_TOKEN_JSON)] {
        assert!(json.contains(&format!("\"contractName\": \"{name}\"")), "{name}");
        assert!(json.contains("\"bytecode\": \"0x60"), "{name} has creation bytecode");
    }
}
