//! Settlement against a real chain: anvil from the npm package `@foundry-rs/anvil`, the committed Vault and
//! TestToken artifacts, cheques signed in Rust and cashed by the Solidity vault.

mod common;

use std::sync::Arc;

use btfs_contracts_client::{
    Address, Cheque, ChequeCheck, ChequeError, EvmConfig, EvmSettlement, NodeKey, SettleError, Settlement,
    SettlementKind, SignedCheque, U256,
};
use common::*;

fn config(url: &str, token: Address) -> EvmConfig {
    EvmConfig { rpc_url: url.to_owned(), chain_id: ANVIL_CHAIN_ID, token, vault: None }
}

async fn connect(url: &str, token: Address, key: NodeKey) -> EvmSettlement {
    EvmSettlement::connect(config(url, token), key).await.expect("connect to anvil")
}

fn reverted_with(err: &SettleError, reason: &str) -> bool {
    matches!(err, SettleError::Reverted { reason: r, .. } if r.contains(reason))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_cheques_end_to_end() {
    let anvil = Anvil::start();
    let (renter_key, host_key, forger_key) = (dev_key(1), dev_key(2), dev_key(3));
    let (renter_addr, host_addr) = (renter_key.address(), host_key.address());

    // The renter deploys the token (holding the whole supply) and its vault, and deposits 100.
    let bootstrap = connect(&anvil.url, Address::ZERO, renter_key.clone()).await;
    let token = bootstrap.deploy_test_token(U256::from(1000)).await.expect("deploy token");
    let renter = connect(&anvil.url, token, renter_key.clone()).await;
    let vault = renter.deploy_vault(token).await.expect("deploy vault");
    let deposit = renter.deposit(vault, U256::from(100)).await.expect("deposit");
    assert_eq!(deposit.amount, U256::from(100));

    let host: Arc<dyn Settlement> = Arc::new(connect(&anvil.url, token, host_key.clone()).await);
    assert_eq!(host.kind(), SettlementKind::Evm);
    assert_eq!(host.issuer(vault).await.expect("issuer"), Some(renter_addr));
    assert_eq!(host.vault_balance(vault).await.expect("balance"), Some(U256::from(100)));
    assert_eq!(host.token_balance(renter_addr).await.expect("balance"), Some(U256::from(900)));

    // The vault's own digest equals the Rust EIP-712 digest.
    let c25 = Cheque { chain_id: ANVIL_CHAIN_ID, vault, beneficiary: host_addr, cumulative_payout: U256::from(25) };
    let digest = renter.vault_cheque_digest(vault, host_addr, U256::from(25)).await.expect("digest");
    assert_eq!(digest, c25.signing_hash());

    // The renter pays 10, then 25 in total; the host checks each against the last accepted total.
    let sign = |amount: u64, key: &NodeKey| {
        let c = Cheque { cumulative_payout: U256::from(amount), ..c25.clone() };
        SignedCheque::sign(c, key).expect("sign")
    };
    let check = ChequeCheck { issuer: renter_addr, vault, beneficiary: host_addr, chain_id: ANVIL_CHAIN_ID };
    let paid = host.paid_out(vault, host_addr).await.expect("paid out").expect("evm answers");
    assert_eq!(paid, U256::ZERO);
    assert_eq!(check.verify(&sign(10, &renter_key), U256::ZERO), Ok(U256::from(10)));
    let cheque25 = sign(25, &renter_key);
    assert_eq!(check.verify(&cheque25, U256::from(10)), Ok(U256::from(15)));
    let balance = host.vault_balance(vault).await.expect("balance").expect("evm answers");
    check.check_funds(&cheque25, paid, balance).expect("the vault covers it");

    // Cashing 25 moves 25 from the vault to the host.
    let receipt = host.cash(&cheque25).await.expect("cash");
    assert_eq!(receipt.amount, U256::from(25));
    let balances = || async {
        (
            host.token_balance(host_addr).await.expect("read").expect("evm"),
            host.vault_balance(vault).await.expect("read").expect("evm"),
            host.paid_out(vault, host_addr).await.expect("read").expect("evm"),
        )
    };
    let after_cash = (U256::from(25), U256::from(75), U256::from(25));
    assert_eq!(balances().await, after_cash);

    // A replay and a lower cheque are refused by the checker and by the vault, and move nothing.
    assert!(matches!(check.verify(&cheque25, U256::from(25)), Err(ChequeError::NotIncreasing { .. })));
    let err = host.cash(&cheque25).await.expect_err("replay reverts");
    assert!(reverted_with(&err, "cheque not increasing"), "{err:#}");
    assert!(err.to_string().contains(&format!("{vault}")), "names the vault: {err}");
    let err = host.cash(&sign(20, &renter_key)).await.expect_err("lower reverts");
    assert!(reverted_with(&err, "cheque not increasing"), "{err:#}");
    assert_eq!(balances().await, after_cash);

    // A cheque signed by another key is refused and reverts.
    let forged = sign(50, &forger_key);
    assert!(matches!(check.verify(&forged, U256::from(25)), Err(ChequeError::Forged { .. })));
    let err = host.cash(&forged).await.expect_err("forged reverts");
    assert!(reverted_with(&err, "invalid issuer signature"), "{err:#}");
    assert_eq!(balances().await, after_cash);

    // A cheque above what the vault holds: the balance check refuses it, and the vault does not pay partially.
    let too_much = sign(200, &renter_key);
    let paid = host.paid_out(vault, host_addr).await.expect("read").expect("evm");
    let balance = host.vault_balance(vault).await.expect("read").expect("evm");
    assert_eq!(
        check.check_funds(&too_much, paid, balance),
        Err(ChequeError::InsufficientFunds { vault, needed: U256::from(175), available: U256::from(75) })
    );
    let err = host.cash(&too_much).await.expect_err("insufficient balance reverts");
    assert!(reverted_with(&err, "insufficient balance"), "{err:#}");
    assert_eq!(balances().await, after_cash);

    // Only the issuer withdraws.
    let err = host.withdraw(vault, U256::from(1)).await.expect_err("non-issuer withdraw reverts");
    assert!(reverted_with(&err, "only issuer"), "{err:#}");
    let err = renter.withdraw(vault, U256::from(76)).await.expect_err("more than the balance");
    assert!(reverted_with(&err, "insufficient balance"), "{err:#}");
    renter.withdraw(vault, U256::from(5)).await.expect("issuer withdraws");
    assert_eq!(host.vault_balance(vault).await.expect("read"), Some(U256::from(70)));
    assert_eq!(host.token_balance(renter_addr).await.expect("read"), Some(U256::from(905)));

    // A later, higher cheque still cashes only the difference.
    let receipt = host.cash(&sign(40, &renter_key)).await.expect("cash 40");
    assert_eq!(receipt.amount, U256::from(15));
    assert_eq!(balances().await, (U256::from(40), U256::from(55), U256::from(40)));

    // Cashing someone else's cheque, or one for another chain, is refused before anything is sent.
    let err = renter.cash(&cheque25).await.expect_err("not the beneficiary");
    assert!(matches!(err, SettleError::NotBeneficiary { .. }), "{err:#}");
    let other_chain = SignedCheque::sign(Cheque { chain_id: 1, ..c25.clone() }, &renter_key).expect("sign");
    assert!(matches!(host.cash(&other_chain).await, Err(SettleError::ChequeChain { expected: 31337, got: 1, .. })));
}

#[tokio::test]
async fn wrong_chain_id_is_refused() {
    let anvil = Anvil::start();
    let cfg = EvmConfig { chain_id: 199, ..config(&anvil.url, Address::ZERO) };
    let err = EvmSettlement::connect(cfg, dev_key(1)).await.expect_err("chain 31337 is not 199");
    assert!(matches!(err, SettleError::WrongChain { expected: 199, got: 31337, .. }), "{err:#}");
    assert_eq!(err.to_string(), format!("settlement endpoint {} is on chain 31337, expected chain 199", anvil.url));
}

#[tokio::test]
async fn endpoint_down_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    // The listener is dropped: nothing listens on the port now.
    let url = format!("http://127.0.0.1:{port}");
    let err = EvmSettlement::connect(config(&url, Address::ZERO), dev_key(1)).await.expect_err("nothing listens");
    assert!(matches!(err, SettleError::Unreachable { .. }), "{err:#}");
    assert!(err.to_string().starts_with(&format!("settlement endpoint {url} unreachable: ")), "{err}");

    let err = EvmSettlement::connect(config("not a url", Address::ZERO), dev_key(1)).await.expect_err("bad url");
    assert!(matches!(err, SettleError::BadUrl { .. }), "{err:#}");
}

#[tokio::test]
async fn endpoint_dying_after_connect_is_a_clear_error() {
    let anvil = Anvil::start();
    let s = connect(&anvil.url, Address::ZERO, dev_key(1)).await;
    drop(anvil);
    let err = s.vault_balance(Address::repeat_byte(1)).await.expect_err("anvil is gone");
    assert!(matches!(err, SettleError::Unreachable { .. }), "{err:#}");
}
