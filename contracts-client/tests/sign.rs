//! Signing and the host's checks, without a chain: keys against anvil's published addresses, contract signatures
//! and tampering, the terms table, the cheque table, and EIP-712 digests recomputed by hand from the type strings.

mod common;

use alloy::primitives::keccak256;
use btfs_contracts_client::contract::{DAY_SECS, GIB};
use btfs_contracts_client::settlement::NoSettlement;
use btfs_contracts_client::{
    Address, B256, Cheque, ChequeCheck, ChequeError, Contract, SettleError, Settlement, SettlementKind, SignatureError,
    SignedCheque, SignedContract, TermsError, U256, quote_price,
};
use common::*;

#[test]
fn node_key_addresses_match_anvil() {
    for i in 0..DEV_KEYS.len() {
        assert_eq!(dev_key(i).address(), dev_address(i), "dev key {i}");
    }
}

#[test]
fn contract_sign_countersign_verify() {
    let proposed = SignedContract::sign_renter(sample_contract(), &dev_key(1)).expect("sign");
    proposed.verify_renter().expect("renter signature verifies");
    assert_eq!(
        proposed.verify_complete(),
        Err(TermsError::NotCountersigned { contract_id: proposed.contract.contract_id })
    );
    let accepted = proposed.countersign(&dev_key(2)).expect("countersign");
    accepted.verify_complete().expect("both signatures verify");

    // Countersigned by someone other than the named host.
    let wrong = SignedContract::sign_renter(sample_contract(), &dev_key(1)).expect("sign").countersign(&dev_key(3));
    let wrong = wrong.expect("countersign");
    assert_eq!(
        wrong.verify_complete(),
        Err(TermsError::WrongSigner {
            contract_id: wrong.contract.contract_id,
            signer: dev_address(3),
            expected: dev_address(2)
        })
    );
}

#[test]
fn renter_signature_by_another_key_is_refused() {
    let signed = SignedContract::sign_renter(sample_contract(), &dev_key(3)).expect("sign");
    assert!(matches!(signed.verify_renter(), Err(TermsError::WrongSigner { signer, .. }) if signer == dev_address(3)));
}

/// Every field is covered by the signature: changing any one after signing breaks both signatures.
#[test]
fn tampered_fields_fail() {
    type Tamper = (&'static str, fn(&mut Contract));
    const TAMPERS: &[Tamper] = &[
        ("contract_id", |c| c.contract_id = B256::repeat_byte(0xee)),
        ("renter", |c| c.renter = dev_address(3)),
        ("host", |c| c.host = dev_address(3)),
        ("shard_cid", |c| c.shard_cid.push(0)),
        ("shard_size", |c| c.shard_size += 1),
        ("shard_index", |c| c.shard_index += 1),
        ("upload_id", |c| c.upload_id = B256::ZERO),
        ("start", |c| c.start += 1),
        ("end", |c| c.end += 1),
        ("price", |c| c.price += U256::from(1)),
        ("upfront", |c| c.upfront += U256::from(1)),
        ("period", |c| c.period += 1),
        ("challenge_interval", |c| c.challenge_interval += 1),
        ("challenge_deadline", |c| c.challenge_deadline += 1),
        ("failure_threshold", |c| c.failure_threshold += 1),
        ("chain_id", |c| c.chain_id += 1),
        ("token", |c| c.token = Address::ZERO),
        ("vault", |c| c.vault = Address::ZERO),
    ];
    let signed = SignedContract::sign_renter(sample_contract(), &dev_key(1))
        .and_then(|s| s.countersign(&dev_key(2)))
        .expect("sign");
    for (name, tamper) in TAMPERS {
        let mut t = signed.clone();
        tamper(&mut t.contract);
        assert_ne!(t.contract.signing_hash(), signed.contract.signing_hash(), "{name} changes the digest");
        assert!(t.verify_renter().is_err(), "{name}: renter signature must fail");
        assert!(t.verify_complete().is_err(), "{name}: complete verification must fail");
    }
}

#[test]
fn malformed_signatures_are_refused() {
    let mut signed = SignedContract::sign_renter(sample_contract(), &dev_key(1)).expect("sign");
    let good = signed.renter_sig.clone();
    let id = signed.contract.contract_id;

    signed.renter_sig = good[..64].to_vec();
    assert_eq!(
        signed.verify_renter(),
        Err(TermsError::BadSignature { contract_id: id, source: SignatureError::Length { len: 64 } })
    );

    signed.renter_sig = good.clone();
    signed.renter_sig[64] = 29;
    assert_eq!(
        signed.verify_renter(),
        Err(TermsError::BadSignature { contract_id: id, source: SignatureError::V { v: 29 } })
    );

    // The malleable twin (n - s, flipped v) recovers the same key; it is refused as Vault.sol refuses it.
    let n = U256::from_str_radix("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", 16).expect("n");
    let s = U256::from_be_slice(&good[32..64]);
    let mut twin = good.clone();
    twin[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
    twin[64] = if good[64] == 27 { 28 } else { 27 };
    signed.renter_sig = twin;
    assert_eq!(
        signed.verify_renter(),
        Err(TermsError::BadSignature { contract_id: id, source: SignatureError::HighS })
    );

    // v as 0/1 is accepted like 27/28.
    signed.renter_sig = good.clone();
    signed.renter_sig[64] -= 27;
    signed.verify_renter().expect("v in 0/1 form");
}

#[test]
fn terms_table() {
    type Case = (&'static str, fn(&mut Contract), fn(&TermsError) -> bool);
    const CASES: &[Case] = &[
        ("end before start", |c| c.end = c.start - 1, |e| matches!(e, TermsError::BadTimes { .. })),
        ("end equals start", |c| c.end = c.start, |e| matches!(e, TermsError::BadTimes { .. })),
        (
            "start long past",
            |c| {
                c.start = NOW - 601;
                c.end = c.start + 30 * DAY;
            },
            |e| matches!(e, TermsError::StartPassed { start, now: NOW, .. } if *start == NOW - 601),
        ),
        (
            "start far ahead",
            |c| {
                c.start = NOW + 601;
                c.end = c.start + 30 * DAY;
            },
            |e| matches!(e, TermsError::StartTooLate { .. }),
        ),
        (
            "too short",
            |c| c.end = c.start + DAY - 1,
            |e| matches!(e, TermsError::Duration { duration, .. } if *duration == DAY - 1),
        ),
        ("too long", |c| c.end = c.start + 366 * DAY, |e| matches!(e, TermsError::Duration { .. })),
        ("empty shard", |c| c.shard_size = 0, |e| matches!(e, TermsError::EmptyShard { .. })),
        (
            "shard too large",
            |c| c.shard_size = (4 << 30) + 1,
            |e| matches!(e, TermsError::ShardTooLarge { size, max, .. } if *size == (4 << 30) + 1 && *max == 4 << 30),
        ),
        (
            "price one below the ask",
            |c| {
                c.shard_size = 64 << 20;
                c.price = U256::from(64 * 30 * 1000 / 1024 - 1);
                c.upfront = U256::ZERO;
            },
            |e| matches!(e, TermsError::PriceTooLow { ask, .. } if *ask == U256::from(1875)),
        ),
        (
            "wrong host",
            |c| c.host = dev_address(3),
            |e| matches!(e, TermsError::WrongHost { got, .. } if *got == dev_address(3)),
        ),
        ("wrong chain", |c| c.chain_id = 1, |e| matches!(e, TermsError::WrongChain { expected: 31337, got: 1, .. })),
        ("wrong token", |c| c.token = Address::ZERO, |e| matches!(e, TermsError::WrongToken { .. })),
        ("no vault", |c| c.vault = Address::ZERO, |e| matches!(e, TermsError::NoVault { .. })),
        (
            "upfront above price",
            |c| {
                c.price = U256::from(40_000);
                c.upfront = U256::from(40_001);
            },
            |e| matches!(e, TermsError::UpfrontAbovePrice { .. }),
        ),
        ("zero period", |c| c.period = 0, |e| matches!(e, TermsError::ZeroPeriod { .. })),
        ("zero interval", |c| c.challenge_interval = 0, |e| matches!(e, TermsError::ChallengePolicy { .. })),
        (
            "deadline after interval",
            |c| c.challenge_deadline = 3601,
            |e| matches!(e, TermsError::ChallengePolicy { .. }),
        ),
        ("zero threshold", |c| c.failure_threshold = 0, |e| matches!(e, TermsError::ChallengePolicy { .. })),
    ];
    let terms = host_terms();
    let ok = SignedContract::sign_renter(sample_contract(), &dev_key(1)).expect("sign");
    ok.validate_terms(NOW, &terms).expect("the sample contract is acceptable");
    // The edges of the accepted start window and the exact ask are accepted.
    for (start, price) in [(NOW - 600, 30_000u64), (NOW + 600, 30_000), (NOW, 30_000)] {
        let mut c = sample_contract();
        c.start = start;
        c.end = start + 30 * DAY;
        c.price = U256::from(price);
        let s = SignedContract::sign_renter(c, &dev_key(1)).expect("sign");
        s.validate_terms(NOW, &terms).expect("edge accepted");
    }
    for (name, mutate, expected) in CASES {
        let mut c = sample_contract();
        mutate(&mut c);
        let signed = SignedContract::sign_renter(c, &dev_key(1)).expect("sign");
        let err = signed.validate_terms(NOW, &terms).expect_err(name);
        assert!(expected(&err), "{name}: got {err:?}");
        assert!(err.to_string().contains(&format!("{}", signed.contract.contract_id)), "{name}: names the contract");
    }
    // A proposal with a bad renter signature is refused before its terms are read.
    let forged = SignedContract::sign_renter(sample_contract(), &dev_key(3)).expect("sign");
    assert!(matches!(forged.validate_terms(NOW, &terms), Err(TermsError::WrongSigner { .. })));
    // Under the `none` settlement a contract needs no vault.
    let mut c = sample_contract();
    c.vault = Address::ZERO;
    let unsettled = SignedContract::sign_renter(c, &dev_key(1)).expect("sign");
    let none_terms = btfs_contracts_client::HostTerms { settlement: SettlementKind::None, ..host_terms() };
    unsettled.validate_terms(NOW, &none_terms).expect("no vault needed without settlement");
}

#[test]
fn quote_price_rounds_up() {
    let p = |size: u64, secs: u64, price: u64| quote_price(size, secs, U256::from(price));
    assert_eq!(p(GIB, DAY_SECS, 1000), U256::from(1000));
    assert_eq!(p(GIB, 30 * DAY_SECS, 1000), U256::from(30_000));
    assert_eq!(p(64 << 20, 30 * DAY_SECS, 1000), U256::from(1875));
    assert_eq!(p(1, 1, 1), U256::from(1), "any storage at a non-zero price costs at least 1");
    assert_eq!(p(GIB / 2, DAY_SECS, 3), U256::from(2), "1.5 rounds up");
    assert_eq!(p(0, DAY_SECS, 1000), U256::ZERO);
    assert_eq!(p(GIB, 0, 1000), U256::ZERO);
    assert_eq!(quote_price(u64::MAX, u64::MAX, U256::MAX), U256::MAX, "saturates");
}

#[test]
fn payment_schedule() {
    let mut c = sample_contract();
    c.start = 0;
    c.end = 10;
    c.period = 3;
    c.price = U256::from(100);
    c.upfront = U256::from(10);
    assert_eq!(c.periods(), 4, "ceil(10 / 3)");
    // 10 upfront, then 90 over 4 periods: floor(90 k / 4) = 22, 45, 67, 90.
    let expected = [10u64, 32, 55, 77, 100, 100];
    for (k, want) in expected.iter().enumerate() {
        assert_eq!(c.amount_due_after(k as u64), U256::from(*want), "after {k} periods");
    }
    // A price near the top of U256 does not overflow and still ends exactly at the price.
    c.price = U256::MAX;
    c.upfront = U256::ZERO;
    assert_eq!(c.amount_due_after(4), U256::MAX);
    assert_eq!(c.amount_due_after(2), U256::MAX / U256::from(2));
    c.period = 0;
    assert_eq!(c.periods(), 0);
}

fn word(a: Address) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(a.as_slice());
    w
}

fn eip712_digest(domain: &[u8], struct_hash: B256) -> B256 {
    let mut buf = vec![0x19, 0x01];
    buf.extend_from_slice(keccak256(domain).as_slice());
    buf.extend_from_slice(struct_hash.as_slice());
    keccak256(&buf)
}

fn domain_bytes(name: &str, version: &str, chain_id: u64) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(keccak256("EIP712Domain(string name,string version,uint256 chainId)").as_slice());
    d.extend_from_slice(keccak256(name).as_slice());
    d.extend_from_slice(keccak256(version).as_slice());
    d.extend_from_slice(&U256::from(chain_id).to_be_bytes::<32>());
    d
}

/// The cheque digest recomputed from the spec'd type string with keccak and ABI words by hand, so a wrong type
/// string, field order or domain in the crate is caught. (`tests/anvil.rs` also compares with `Vault.sol`.)
#[test]
fn cheque_digest_matches_hand_computation() {
    let cheque = Cheque {
        chain_id: 199,
        vault: "0x00000000000000000000000000000000000000aa".parse().expect("address"),
        beneficiary: "0x00000000000000000000000000000000000000bb".parse().expect("address"),
        cumulative_payout: U256::from(123_456_789u64),
    };
    let mut s = Vec::new();
    s.extend_from_slice(keccak256("Cheque(address vault,address beneficiary,uint256 cumulativePayout)").as_slice());
    s.extend_from_slice(&word(cheque.vault));
    s.extend_from_slice(&word(cheque.beneficiary));
    s.extend_from_slice(&cheque.cumulative_payout.to_be_bytes::<32>());
    let want = eip712_digest(&domain_bytes("Vault", "1.0", 199), keccak256(&s));
    assert_eq!(cheque.signing_hash(), want);
}

#[test]
fn contract_digest_matches_hand_computation() {
    const TYPE: &str = "StorageContract(bytes32 contractId,address renter,address host,bytes shardCid,\
uint64 shardSize,uint64 shardIndex,bytes32 uploadId,uint64 start,uint64 end,uint256 price,uint256 upfront,\
uint64 period,uint32 challengeInterval,uint32 challengeDeadline,uint32 failureThreshold,uint256 chainId,\
address token,address vault)";
    let c = sample_contract();
    let u = |v: u64| U256::from(v).to_be_bytes::<32>();
    let mut s = Vec::new();
    s.extend_from_slice(keccak256(TYPE).as_slice());
    s.extend_from_slice(c.contract_id.as_slice());
    s.extend_from_slice(&word(c.renter));
    s.extend_from_slice(&word(c.host));
    s.extend_from_slice(keccak256(&c.shard_cid).as_slice());
    for v in [c.shard_size, c.shard_index] {
        s.extend_from_slice(&u(v));
    }
    s.extend_from_slice(c.upload_id.as_slice());
    for v in [c.start, c.end] {
        s.extend_from_slice(&u(v));
    }
    s.extend_from_slice(&c.price.to_be_bytes::<32>());
    s.extend_from_slice(&c.upfront.to_be_bytes::<32>());
    s.extend_from_slice(&u(c.period));
    for v in [c.challenge_interval, c.challenge_deadline, c.failure_threshold] {
        s.extend_from_slice(&u(u64::from(v)));
    }
    s.extend_from_slice(&u(c.chain_id));
    s.extend_from_slice(&word(c.token));
    s.extend_from_slice(&word(c.vault));
    let want = eip712_digest(&domain_bytes("BTFS Storage", "1", c.chain_id), keccak256(&s));
    assert_eq!(c.signing_hash(), want);
}

fn cheque(amount: u64) -> Cheque {
    Cheque {
        chain_id: ANVIL_CHAIN_ID,
        vault: Address::repeat_byte(0x7a),
        beneficiary: dev_address(2),
        cumulative_payout: U256::from(amount),
    }
}

#[test]
fn cheque_check_table() {
    let check = ChequeCheck {
        issuer: dev_address(1),
        vault: Address::repeat_byte(0x7a),
        beneficiary: dev_address(2),
        chain_id: 31337,
    };
    let signed = |c: Cheque| SignedCheque::sign(c, &dev_key(1)).expect("sign");

    assert_eq!(signed(cheque(10)).recover_issuer(), Ok(dev_address(1)));
    assert_eq!(check.verify(&signed(cheque(10)), U256::ZERO), Ok(U256::from(10)));
    assert_eq!(check.verify(&signed(cheque(25)), U256::from(10)), Ok(U256::from(15)));

    type Case = (&'static str, SignedCheque, u64, ChequeError);
    let vault = Address::repeat_byte(0x7a);
    let cases: Vec<Case> = vec![
        (
            "replay",
            signed(cheque(25)),
            25,
            ChequeError::NotIncreasing { vault, last: U256::from(25), got: U256::from(25) },
        ),
        (
            "lower",
            signed(cheque(20)),
            25,
            ChequeError::NotIncreasing { vault, last: U256::from(25), got: U256::from(20) },
        ),
        (
            "forged",
            SignedCheque::sign(cheque(50), &dev_key(3)).expect("sign"),
            25,
            ChequeError::Forged { vault, signer: dev_address(3), issuer: dev_address(1) },
        ),
        (
            "wrong beneficiary",
            signed(Cheque { beneficiary: dev_address(3), ..cheque(50) }),
            25,
            ChequeError::WrongBeneficiary { vault, expected: dev_address(2), got: dev_address(3) },
        ),
        (
            "wrong vault",
            signed(Cheque { vault: Address::repeat_byte(0x7b), ..cheque(50) }),
            25,
            ChequeError::WrongVault { expected: vault, got: Address::repeat_byte(0x7b) },
        ),
        (
            "wrong chain",
            signed(Cheque { chain_id: 1, ..cheque(50) }),
            25,
            ChequeError::WrongChain { vault, expected: 31337, got: 1 },
        ),
        (
            "truncated signature",
            SignedCheque { issuer_sig: vec![0; 10], ..signed(cheque(50)) },
            25,
            ChequeError::BadSignature { vault, source: SignatureError::Length { len: 10 } },
        ),
    ];
    for (name, c, last, want) in cases {
        assert_eq!(check.verify(&c, U256::from(last)), Err(want), "{name}");
    }
    // An amount changed after signing recovers some other key.
    let mut raised = signed(cheque(30));
    raised.cheque.cumulative_payout = U256::from(3000);
    assert!(matches!(check.verify(&raised, U256::from(25)), Err(ChequeError::Forged { .. })));

    // Funds: cashing 100 after 25 were paid needs 75.
    let c100 = signed(cheque(100));
    check.check_funds(&c100, U256::from(25), U256::from(75)).expect("exactly enough");
    assert_eq!(
        check.check_funds(&c100, U256::from(25), U256::from(74)),
        Err(ChequeError::InsufficientFunds { vault, needed: U256::from(75), available: U256::from(74) })
    );
}

#[tokio::test]
async fn no_settlement_is_unsettled() {
    let s: std::sync::Arc<dyn Settlement> = std::sync::Arc::new(NoSettlement);
    assert_eq!(s.kind(), SettlementKind::None);
    let v = Address::repeat_byte(1);
    assert_eq!(s.vault_balance(v).await.expect("read"), None);
    assert_eq!(s.issuer(v).await.expect("read"), None);
    assert_eq!(s.paid_out(v, v).await.expect("read"), None);
    assert_eq!(s.token_balance(v).await.expect("read"), None);
    let c = SignedCheque::sign(cheque(1), &dev_key(1)).expect("sign");
    let err = s.cash(&c).await.expect_err("cash is refused");
    assert!(matches!(err, SettleError::Unsettled { op: "cash" }));
    assert_eq!(err.to_string(), "settlement is off (backend none): cash is unsettled");
    assert!(matches!(s.deposit(v, U256::from(1)).await, Err(SettleError::Unsettled { .. })));
    assert!(matches!(s.withdraw(v, U256::from(1)).await, Err(SettleError::Unsettled { .. })));
}
