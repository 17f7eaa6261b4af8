//! A local EVM chain for tests: the `anvil` binary that npm `@foundry-rs/anvil` ships (installed by
//! `scripts/setup.sh` under `contracts-client/solidity`), on 127.0.0.1 at a free port, killed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// anvil's first dev key (from its default mnemonic): funded with 10 000 ETH at start.
pub const DEV_KEY_0: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// A running anvil.
pub struct Anvil {
    child: Child,
    pub url: String,
    pub chain_id: u64,
}

/// The anvil binary inside the npm package.
pub fn anvil_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../contracts-client/solidity/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
}

impl Anvil {
    /// Starts anvil and waits until its JSON-RPC answers; panics (naming the fix) when the binary is missing.
    pub fn start() -> Self {
        let bin = anvil_bin();
        assert!(
            bin.exists(),
            "{} is missing: run scripts/setup.sh (npm ci in contracts-client/solidity)",
            bin.display()
        );
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--chain-id", "31337", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start anvil");
        let url = format!("http://127.0.0.1:{port}");
        let mut anvil = Self { child, url, chain_id: 31337 };
        let deadline = Instant::now() + Duration::from_secs(30);
        while anvil.rpc("eth_chainId", json!([])).is_err() {
            assert!(Instant::now() < deadline, "anvil did not answer within 30 s");
            if let Ok(Some(status)) = anvil.child.try_wait() {
                panic!("anvil exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anvil
    }

    /// One JSON-RPC call; `Err` carries the error object or the transport error.
    pub fn rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let mut resp = ureq::post(&self.url).send_json(&body).map_err(|e| e.to_string())?;
        let v: Value = resp.body_mut().read_json().map_err(|e| e.to_string())?;
        match v.get("error") {
            Some(e) => Err(e.to_string()),
            None => Ok(v["result"].clone()),
        }
    }

    /// Gives `address` (0x...) `eth` ether for gas.
    pub fn fund(&self, address: &str, eth: u64) {
        let wei = format!("{:#x}", u128::from(eth) * 1_000_000_000_000_000_000u128);
        self.rpc("anvil_setBalance", json!([address, wei])).expect("anvil_setBalance");
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
