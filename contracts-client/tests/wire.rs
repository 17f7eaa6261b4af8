//! The storage protocol's messages: every variant round-trips through CBOR exactly, decoding arbitrary or
//! mutated bytes never panics, the size cap holds, and host ads verify.

mod common;

use btfs_contracts_client::wire::{
    self, AdError, HostAd, MAX_MESSAGE, RefuseCode, Request, Response, SignedHostAd, WireError,
};
use btfs_contracts_client::{Address, B256, Cheque, SettlementKind, SignedCheque, SignedContract, U256};
use common::*;
use proptest::prelude::*;

fn signed_contract() -> SignedContract {
    SignedContract::sign_renter(sample_contract(), &dev_key(1)).and_then(|s| s.countersign(&dev_key(2))).expect("sign")
}

fn signed_cheque() -> SignedCheque {
    let cheque = Cheque {
        chain_id: ANVIL_CHAIN_ID,
        vault: Address::repeat_byte(0x7a),
        beneficiary: dev_address(2),
        cumulative_payout: U256::MAX - U256::from(1),
    };
    SignedCheque::sign(cheque, &dev_key(1)).expect("sign")
}

fn ad() -> HostAd {
    HostAd {
        host: dev_address(2),
        peer_id: "16Uiu2HAmExamplePeerId".into(),
        price_per_gib_day: U256::from(1000),
        max_shard_size: 4 << 30,
        free_space: 1 << 40,
        min_duration: DAY,
        max_duration: 365 * DAY,
        chain_id: ANVIL_CHAIN_ID,
        token: Address::repeat_byte(0x70),
        settlement: SettlementKind::Evm,
        issued_at: NOW,
        expires_at: NOW + 3600,
    }
}

fn requests() -> Vec<Request> {
    let id = B256::repeat_byte(0xc1);
    vec![
        Request::Quote { shard_size: 1 << 30, duration_secs: 30 * DAY },
        Request::Propose { contract: SignedContract::sign_renter(sample_contract(), &dev_key(1)).expect("sign") },
        Request::Challenge { contract_id: id, leaf_index: u64::MAX },
        Request::Pay { contract_id: id, cheque: signed_cheque() },
        Request::Release { contract_id: id },
        Request::Stored { contract_id: id },
    ]
}

fn responses() -> Vec<Response> {
    let mut out = vec![
        Response::Quote(SignedHostAd::sign(ad(), &dev_key(2)).expect("sign")),
        Response::Accepted { contract: signed_contract() },
        Response::Proof { path: vec![vec![0x12; 40], vec![], vec![0xff; 300]], leaf: vec![7; 1 << 20] },
        Response::ChequeAccepted { cumulative: U256::MAX },
        Response::Ack,
    ];
    for code in [
        RefuseCode::Capacity,
        RefuseCode::Price,
        RefuseCode::ShardSize,
        RefuseCode::Duration,
        RefuseCode::BadSignature,
        RefuseCode::Terms,
        RefuseCode::UnknownContract,
        RefuseCode::NotHeld,
        RefuseCode::Cheque,
        RefuseCode::Busy,
        RefuseCode::Malformed,
    ] {
        out.push(Response::Refused { code, reason: format!("refused: {code:?} ✓") });
    }
    out
}

#[test]
fn every_request_round_trips() {
    for r in requests() {
        let bytes = wire::encode(&r).expect("encode");
        let back: Request = wire::decode(&bytes).expect("decode");
        assert_eq!(back, r);
    }
}

#[test]
fn every_response_round_trips() {
    for r in responses() {
        let bytes = wire::encode(&r).expect("encode");
        let back: Response = wire::decode(&bytes).expect("decode");
        assert_eq!(back, r);
    }
}

#[test]
fn evm_values_are_compact_byte_strings() {
    // A release is {"Release": {"contract_id": <32 bytes>}}: map(1) "Release" map(1) "contract_id" bytes(32).
    let bytes = wire::encode(&Request::Release { contract_id: B256::repeat_byte(0xc1) }).expect("encode");
    let mut want = vec![0xa1, 0x67];
    want.extend_from_slice(b"Release");
    want.extend_from_slice(&[0xa1, 0x6b]);
    want.extend_from_slice(b"contract_id");
    want.extend_from_slice(&[0x58, 0x20]);
    want.extend_from_slice(&[0xc1; 32]);
    assert_eq!(bytes, want);
    // An amount is 32 big-endian bytes, whatever its value.
    let bytes = wire::encode(&Response::ChequeAccepted { cumulative: U256::from(1) }).expect("encode");
    assert!(bytes.ends_with(&[&[0x58, 0x20][..], &[0; 31], &[1]].concat()));
}

#[test]
fn wrong_lengths_are_malformed() {
    // contract_id of 31 bytes.
    let mut bad = vec![0xa1, 0x67];
    bad.extend_from_slice(b"Release");
    bad.extend_from_slice(&[0xa1, 0x6b]);
    bad.extend_from_slice(b"contract_id");
    bad.extend_from_slice(&[0x58, 0x1f]);
    bad.extend_from_slice(&[0xc1; 31]);
    assert!(matches!(wire::decode::<Request>(&bad), Err(WireError::Malformed { .. })));
}

#[test]
fn size_cap() {
    let big = Response::Proof { path: vec![], leaf: vec![0; MAX_MESSAGE] };
    assert!(matches!(wire::encode(&big), Err(WireError::TooLarge { max: MAX_MESSAGE, .. })));
    let bytes = vec![0u8; MAX_MESSAGE + 1];
    assert!(matches!(wire::decode::<Request>(&bytes), Err(WireError::TooLarge { len, .. }) if len == MAX_MESSAGE + 1));
    // The largest real proof (a 1 MiB leaf plus a deep path) fits.
    let proof = Response::Proof { path: vec![vec![0xab; 8 * 1024]; 40], leaf: vec![0; 1 << 20] };
    wire::encode(&proof).expect("a 1 MiB leaf with a 40-node path fits");
}

#[test]
fn host_ad_verifies() {
    let signed = SignedHostAd::sign(ad(), &dev_key(2)).expect("sign");
    signed.verify(NOW).expect("valid now");
    signed.verify(NOW - 300).expect("within the clock skew");
    let host = dev_address(2);
    assert_eq!(signed.verify(NOW - 301), Err(AdError::NotYetValid { host, issued_at: NOW, now: NOW - 301 }));
    assert_eq!(signed.verify(NOW + 3600), Err(AdError::Expired { host, expires_at: NOW + 3600, now: NOW + 3600 }));

    let mut cheaper = signed.clone();
    cheaper.ad.price_per_gib_day = U256::from(1);
    assert!(matches!(cheaper.verify(NOW), Err(AdError::WrongSigner { .. })));
    let mut other_peer = signed.clone();
    other_peer.ad.peer_id.push('x');
    assert!(matches!(other_peer.verify(NOW), Err(AdError::WrongSigner { .. })));
    let by_other = SignedHostAd::sign(ad(), &dev_key(3)).expect("sign");
    assert_eq!(by_other.verify(NOW), Err(AdError::WrongSigner { host, signer: dev_address(3) }));
}

#[test]
fn settlement_kind_is_a_lowercase_string() {
    let bytes = wire::encode(&SettlementKind::Evm).expect("encode");
    assert_eq!(bytes, [&[0x63][..], b"evm"].concat());
    let bytes = wire::encode(&SettlementKind::None).expect("encode");
    assert_eq!(bytes, [&[0x64][..], b"none"].concat());
}

/// Valid encodings of every variant, computed once (signing is slow in debug builds).
static ENCODINGS: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(all_encodings);

fn all_encodings() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = requests().iter().map(|r| wire::encode(r).expect("encode")).collect();
    // Skip the 1 MiB proof: mutating it is slow and adds nothing over the small messages.
    out.extend(
        responses().iter().filter(|r| !matches!(r, Response::Proof { .. })).map(|r| wire::encode(r).expect("encode")),
    );
    out.push(wire::encode(&Response::Proof { path: vec![vec![1; 3]; 3], leaf: vec![2; 5] }).expect("encode"));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decode_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = wire::decode::<Request>(&bytes);
        let _ = wire::decode::<Response>(&bytes);
    }

    #[test]
    fn decode_never_panics_on_mutations(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let all = &*ENCODINGS;
        let mut bytes = all[which.index(all.len())].clone();
        for (at, value, kind) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = value,
                1 => bytes.insert(i, value),
                _ => { bytes.remove(i); }
            }
        }
        let _ = wire::decode::<Request>(&bytes);
        let _ = wire::decode::<Response>(&bytes);
        if !bytes.is_empty() {
            let n = cut.index(bytes.len());
            let _ = wire::decode::<Request>(&bytes[..n]);
            let _ = wire::decode::<Response>(&bytes[..n]);
        }
    }
}
