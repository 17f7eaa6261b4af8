//! A local EVM chain for tests: the `anvil` binary that npm `@foundry-rs/anvil` ships (installed by
//! `scripts/setup.sh` under `contracts-client/solidity`), on 127.0.0.1 at a free port, killed on drop. Its
//! state is kept in a file, so a test can take the chain down (`stop`) and bring it back as it was (`restart`).

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
    port: u16,
    /// Where anvil dumps its state when it stops and loads it from when it starts.
    state: tempfile::TempDir,
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
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let state = tempfile::tempdir().expect("tempdir");
        let child = Self::spawn(port, &state);
        let mut anvil = Self { child, port, state, url: format!("http://127.0.0.1:{port}"), chain_id: 31337 };
        anvil.wait_ready();
        anvil
    }

    fn spawn(port: u16, state: &tempfile::TempDir) -> Child {
        let bin = anvil_bin();
        assert!(
            bin.exists(),
            "{} is missing: run scripts/setup.sh (npm ci in contracts-client/solidity)",
            bin.display()
        );
        Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--chain-id", "31337", "--silent"])
            .arg("--state")
            .arg(state.path().join("state.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start anvil")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.rpc("eth_chainId", json!([])).is_err() {
            assert!(Instant::now() < deadline, "anvil did not answer within 30 s");
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("anvil exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Takes the chain down: anvil is asked to exit (SIGTERM), dumps its state, and its port refuses
    /// connections until `restart`.
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let status = self.child.wait().expect("wait for anvil");
        assert!(self.state.path().join("state.json").exists(), "anvil ({status}) dumped no state");
    }

    /// Brings the chain back on the same port with the state it had when it stopped.
    pub fn restart(&mut self) {
        self.child = Self::spawn(self.port, &self.state);
        self.wait_ready();
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

/// The first dev account (unlocked in anvil, so `eth_sendTransaction` from it needs no signature).
pub const DEV_ADDRESS_0: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";

/// ERC20 selectors (the first four bytes of keccak-256 of the signature), as published.
const BALANCE_OF: &str = "70a08231"; // balanceOf(address)
const MINT: &str = "40c10f19"; // mint(address,uint256), TestToken only

/// A 32-byte ABI word from an address (`0x` + 40 hex digits).
fn word_address(address: &str) -> String {
    format!("{:0>64}", address.trim_start_matches("0x").to_lowercase())
}

fn word_u128(value: u128) -> String {
    format!("{value:064x}")
}

impl Anvil {
    /// Sends a transaction from the dev account and waits for its receipt; panics if it reverts.
    pub fn send(&self, to: Option<&str>, data: &str) -> Value {
        let mut tx = json!({ "from": DEV_ADDRESS_0, "data": data, "gas": "0x989680" });
        if let Some(to) = to {
            tx["to"] = json!(to);
        }
        let hash = self.rpc("eth_sendTransaction", json!([tx])).expect("eth_sendTransaction");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let receipt = self.rpc("eth_getTransactionReceipt", json!([hash])).expect("receipt");
            if !receipt.is_null() {
                assert_eq!(receipt["status"], "0x1", "transaction reverted: {receipt}");
                return receipt;
            }
            assert!(Instant::now() < deadline, "transaction {hash} not mined within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Deploys the committed `TestToken` artifact with no initial supply; returns its address.
    pub fn deploy_test_token(&self) -> String {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../contracts-client/artifacts/TestToken.json");
        let artifact: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read TestToken artifact")).expect("artifact JSON");
        let bytecode = artifact["bytecode"].as_str().expect("bytecode");
        let receipt = self.send(None, &format!("{bytecode}{}", word_u128(0)));
        receipt["contractAddress"].as_str().expect("contract address").to_string()
    }

    /// Mints `amount` of a `TestToken` to `to`.
    pub fn mint(&self, token: &str, to: &str, amount: u128) {
        self.send(Some(token), &format!("0x{MINT}{}{}", word_address(to), word_u128(amount)));
    }

    /// The ERC20 balance of `owner`.
    pub fn token_balance(&self, token: &str, owner: &str) -> u128 {
        let data = format!("0x{BALANCE_OF}{}", word_address(owner));
        let out = self.rpc("eth_call", json!([{ "to": token, "data": data }, "latest"])).expect("eth_call");
        let hex = out.as_str().expect("hex result").trim_start_matches("0x");
        let digits = hex.trim_start_matches('0');
        if digits.is_empty() { 0 } else { u128::from_str_radix(digits, 16).expect("balance fits in u128") }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
