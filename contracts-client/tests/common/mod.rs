//! Shared test fixtures: anvil's well-known dev keys, a valid sample contract and host terms, and an anvil
//! process started from the npm package and killed on drop.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use btfs_contracts_client::{Address, B256, Contract, HostTerms, NodeKey, SettlementKind, U256};

/// The first dev keys of anvil's default mnemonic ("test test ... junk") and their addresses, as printed by
/// anvil at start-up.
pub const DEV_KEYS: [(&str, &str); 4] = [
    ("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80", "f39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
    ("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d", "70997970C51812dc3A010C7d01b50e0d17dc79C8"),
    ("5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a", "3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
    ("7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6", "90F79bf6EB2c4f870365E785982E1f101E93b906"),
];

pub const ANVIL_CHAIN_ID: u64 = 31337;

pub fn dev_key(i: usize) -> NodeKey {
    let secret: [u8; 32] = alloy::hex::decode(DEV_KEYS[i].0).expect("hex").try_into().expect("32 bytes");
    NodeKey::from_secret(&secret).expect("valid dev key")
}

pub fn dev_address(i: usize) -> Address {
    DEV_KEYS[i].1.parse().expect("address")
}

pub const NOW: u64 = 1_800_000_000;
pub const DAY: u64 = 86_400;

/// Terms of host `dev_key(2)`: 1000 units per GiB per day, shards up to 4 GiB, 1 to 365 days.
pub fn host_terms() -> HostTerms {
    HostTerms {
        host: dev_address(2),
        price_per_gib_day: U256::from(1000u64),
        max_shard_size: 4 << 30,
        min_duration: DAY,
        max_duration: 365 * DAY,
        chain_id: ANVIL_CHAIN_ID,
        token: Address::repeat_byte(0x70),
        settlement: SettlementKind::Evm,
        max_start_skew: 600,
    }
}

/// A contract from renter `dev_key(1)` to host `dev_key(2)` that [`host_terms`] accept at [`NOW`]:
/// 1 GiB for 30 days at 1000 per GiB-day is 30000; it offers 30000 with 3000 upfront, paid daily.
pub fn sample_contract() -> Contract {
    Contract {
        contract_id: B256::repeat_byte(0xc1),
        renter: dev_address(1),
        host: dev_address(2),
        shard_cid: vec![0x01, 0x55, 0x12, 0x20, 0xab, 0xcd],
        shard_size: 1 << 30,
        shard_index: 3,
        upload_id: B256::repeat_byte(0x0a),
        start: NOW,
        end: NOW + 30 * DAY,
        price: U256::from(30_000u64),
        upfront: U256::from(3_000u64),
        period: DAY,
        challenge_interval: 3600,
        challenge_deadline: 600,
        failure_threshold: 3,
        chain_id: ANVIL_CHAIN_ID,
        token: Address::repeat_byte(0x70),
        vault: Address::repeat_byte(0x7a),
    }
}

/// An anvil process on a free loopback port; killed and reaped on drop.
pub struct Anvil {
    child: Child,
    pub url: String,
}

impl Anvil {
    pub fn start() -> Anvil {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("solidity/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
        assert!(
            bin.exists(),
            "anvil binary missing at {}: run `npm ci --prefix contracts-client/solidity`",
            bin.display()
        );
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--chain-id", "31337", "--silent"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start anvil");
        let mut anvil = Anvil { child, url: format!("http://127.0.0.1:{port}") };
        anvil.wait_ready(port);
        anvil
    }

    fn wait_ready(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll anvil") {
                panic!("anvil exited early with {status}");
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let req = format!(
                    "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let mut out = String::new();
                if s.write_all(req.as_bytes()).is_ok() && s.read_to_string(&mut out).is_ok() && out.contains("0x7a69") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "anvil did not answer on port {port} within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
