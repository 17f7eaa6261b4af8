//! Published kubo CIDs for small inputs, checked through the public import API (the large vectors and the
//! JavaScript oracle run against the `btfs` binary in the workspace `tests` crate).

use btfs_chunker::chunk::import_bytes;
use btfs_chunker::import::{Options, Profile};

fn opts(flags: &str) -> Options {
    let mut o = Options::default();
    for flag in flags.split_whitespace() {
        match flag {
            "--cid-version=1" => o.cid_version = Some(1),
            "--raw-leaves=false" => o.raw_leaves = Some(false),
            "--raw-leaves" => o.raw_leaves = Some(true),
            "--trickle" => o.trickle = true,
            "--hash=sha2-512" => o.hash = Some("sha2-512".parse().expect("known hash")),
            "--cid-profile=unixfs-v1-2025" => o.profile = Some(Profile::UnixfsV1_2025),
            other => panic!("flag {other} not handled by this test"),
        }
    }
    o
}

/// (content, flags, CID) rows from `shared/fixtures/cid-vectors.tsv` whose content is a short text.
const TEXT_VECTORS: &[(&str, &str, &str)] = &[
    ("", "", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"),
    ("", "--cid-version=1", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
    ("", "--cid-version=1 --raw-leaves=false", "bafybeif7ztnhq65lumvvtr4ekcwd2ifwgm3awq4zfr3srh462rwyinlb4y"),
    ("hello world\n", "", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"),
    ("hello world\n", "--cid-version=1", "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"),
    ("hello world", "", "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"),
    ("hello world", "--cid-version=1", "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"),
    (
        "hello world",
        "--cid-version=1 --raw-leaves=false",
        "bafybeihykld7uyxzogax6vgyvag42y7464eywpf55gxi5qpoisibh3c5wa",
    ),
    (
        "hello world",
        "--hash=sha2-512",
        "bafkrgqbqt3gerhas23vuzrapkdeqf4vu2dwxp3srdj6hvg6nhsug2tgyn6mj3u23yx7utftq3i2ckw2fwdh5qmhid5qf3t35yvkc5e5ottlw6",
    ),
    ("Hello Worlds!\n", "", "QmVr26fY1tKyspEJBniVhqxQeEjhF78XerGiqWAwraVLQH"),
    ("Hello Worlds!\n", "--trickle", "QmUkUQgxXeggyaD5Ckv8ZqfW8wHBX6cYyeiyqvVZYzq5Bi"),
    (
        "Hello from IPFS Gateway Checker\n",
        "--cid-version=1 --raw-leaves=false",
        "bafybeifx7yeb55armcsxwwitkymga5xf53dxiarykms3ygqic223w5sk3m",
    ),
];

#[test]
fn text_vectors() {
    let mut wrong = Vec::new();
    for &(content, flags, want) in TEXT_VECTORS {
        let params = opts(flags).resolve().expect("valid options");
        let (root, _) = import_bytes(&params, content.as_bytes());
        if root.cid.to_string() != want {
            wrong.push(format!("{content:?} {flags}: got {}, want {want}", root.cid));
        }
    }
    assert!(wrong.is_empty(), "mismatches:\n{}", wrong.join("\n"));
}

#[test]
fn zeros_vectors() {
    let zeros = vec![0u8; 45_900_000];
    for (flags, want) in [
        ("", "QmRdPboiJQoZ5cdazR9a8vGqdJvWg6M5bfdtUSKNHpuscj"),
        ("--trickle", "QmdZcefqMZ3tzdS4CRBN5s1c67eS3nQzN8TNXFBYfgofoy"),
    ] {
        let params = opts(flags).resolve().expect("valid options");
        let (root, _) = import_bytes(&params, &zeros);
        assert_eq!(root.cid.to_string(), want, "zeros:45900000 {flags}");
    }
}

#[test]
fn inline_puts_small_blocks_in_the_cid() {
    let params = Options { inline: true, ..Default::default() }.resolve().expect("valid options");
    let (root, blocks) = import_bytes(&params, b"hello world");
    assert_eq!(root.cid.hash().code(), btfs_chunker::hash::IDENTITY, "a 19-byte leaf is inlined");
    assert_eq!(root.cid.version(), cid::Version::V1, "identity CIDs are always v1");
    assert_eq!(root.cid.hash().digest(), &blocks[0].data[..], "the CID carries the block itself");
    // Blocks over the limit keep their hash.
    let (big, _) = import_bytes(&params, &[7u8; 100]);
    assert_eq!(big.cid.hash().code(), btfs_chunker::hash::SHA2_256);
    assert_eq!(big.cid.version(), cid::Version::V0);
}
