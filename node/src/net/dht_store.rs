//! Kademlia's record store, kept in the repo's `dht` column family so provider records survive restarts and
//! their number is bounded by configuration, not by rust-libp2p's in-memory default of 1024 keys.
//!
//! Keys: `p` + varint(len) + key + provider peer id → provider record; `l` + key → marker for keys this node
//! provides itself (what Kademlia re-publishes); `r` + key → value record. Expiry is stored as Unix
//! milliseconds and turned back into a monotonic deadline on read; expired entries are skipped and deleted.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use btfs_chunker::varint;
use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::{Multiaddr, PeerId};

use crate::Node;

/// Limits of the store.
#[derive(Debug, Clone, Copy)]
pub struct DhtLimits {
    /// Distinct keys this node will keep provider records for (its own and others').
    pub max_provider_keys: usize,
    /// Providers kept per key (Kademlia's replication factor is 20).
    pub max_providers_per_key: usize,
    /// Value records.
    pub max_records: usize,
    /// Largest value record.
    pub max_value_bytes: usize,
}

impl Default for DhtLimits {
    fn default() -> Self {
        Self { max_provider_keys: 1_000_000, max_providers_per_key: 20, max_records: 100_000, max_value_bytes: 65536 }
    }
}

/// The RocksDB-backed record store.
pub struct DhtStore {
    node: Arc<Node>,
    local: PeerId,
    limits: DhtLimits,
    provider_keys: usize,
    records: usize,
}

fn provider_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 4);
    out.push(b'p');
    varint::encode(key.len() as u64, &mut out);
    out.extend_from_slice(key);
    out
}

fn unix_ms(deadline: Option<Instant>) -> u64 {
    let Some(deadline) = deadline else { return 0 };
    let left = deadline.saturating_duration_since(Instant::now());
    let at = SystemTime::now() + left;
    at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(1).max(1)
}

/// Turns stored Unix milliseconds back into a deadline; `Err` when it has passed.
fn deadline(ms: u64) -> std::result::Result<Option<Instant>, ()> {
    if ms == 0 {
        return Ok(None);
    }
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    match at.duration_since(SystemTime::now()) {
        Ok(left) => Ok(Some(Instant::now() + left)),
        Err(_) => Err(()),
    }
}

fn put_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    varint::encode(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn take_bytes<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, n) = varint::decode(buf).ok()?;
    let len = usize::try_from(len).ok()?;
    let bytes = buf.get(n..n.checked_add(len)?)?;
    *buf = &buf[n + len..];
    Some(bytes)
}

fn take_u64(buf: &mut &[u8]) -> Option<u64> {
    let (v, n) = varint::decode(buf).ok()?;
    *buf = &buf[n..];
    Some(v)
}

fn encode_provider(record: &ProviderRecord) -> Vec<u8> {
    let mut out = Vec::new();
    varint::encode(unix_ms(record.expires), &mut out);
    varint::encode(record.addresses.len() as u64, &mut out);
    for addr in &record.addresses {
        put_bytes(&addr.to_vec(), &mut out);
    }
    out
}

fn decode_provider(key: &RecordKey, provider: PeerId, mut value: &[u8]) -> Option<ProviderRecord> {
    let expires = deadline(take_u64(&mut value)?).ok()?;
    let n = take_u64(&mut value)?.min(64);
    let mut addresses = Vec::new();
    for _ in 0..n {
        addresses.push(Multiaddr::try_from(take_bytes(&mut value)?.to_vec()).ok()?);
    }
    Some(ProviderRecord { key: key.clone(), provider, expires, addresses })
}

fn encode_record(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.value.len() + 64);
    varint::encode(unix_ms(record.expires), &mut out);
    put_bytes(&record.publisher.map(|p| p.to_bytes()).unwrap_or_default(), &mut out);
    put_bytes(&record.value, &mut out);
    out
}

fn decode_record(key: RecordKey, mut value: &[u8]) -> Option<Record> {
    let expires = deadline(take_u64(&mut value)?).ok()?;
    let publisher = take_bytes(&mut value)?;
    let publisher = if publisher.is_empty() { None } else { Some(PeerId::from_bytes(publisher).ok()?) };
    let value = take_bytes(&mut value)?.to_vec();
    Some(Record { key, value, publisher, expires })
}

impl DhtStore {
    /// Opens the store over the node's repo, counting what it already holds.
    pub fn new(node: Arc<Node>, local: PeerId, limits: DhtLimits) -> Self {
        let mut store = Self { node, local, limits, provider_keys: 0, records: 0 };
        store.provider_keys = store.count_provider_keys();
        store.records = store.scan(b"r", usize::MAX).len();
        store
    }

    fn scan(&self, prefix: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.node.repo().store().dht_scan(prefix, limit).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "DHT store scan failed");
            Vec::new()
        })
    }

    fn write(&self, put: &[(&[u8], &[u8])], delete: &[&[u8]]) {
        if let Err(e) = self.node.repo().store().dht_write(put, delete) {
            tracing::warn!(error = %e, "DHT store write failed");
        }
    }

    fn count_provider_keys(&self) -> usize {
        let mut keys = 0;
        let mut last: Option<Vec<u8>> = None;
        for (k, _) in self.scan(b"p", usize::MAX) {
            let mut rest = &k[1..];
            let Some(key) = take_bytes(&mut rest) else { continue };
            if last.as_deref() != Some(key) {
                keys += 1;
                last = Some(key.to_vec());
            }
        }
        keys
    }

    /// Number of distinct keys with provider records.
    pub fn provider_key_count(&self) -> usize {
        self.provider_keys
    }
}

impl RecordStore for DhtStore {
    type RecordsIter<'a> = std::vec::IntoIter<Cow<'a, Record>>;
    type ProvidedIter<'a> = std::vec::IntoIter<Cow<'a, ProviderRecord>>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        let mut db_key = b"r".to_vec();
        db_key.extend_from_slice(k.as_ref());
        let value = self.node.repo().store().dht_get(&db_key).ok()??;
        decode_record(k.clone(), &value).map(Cow::Owned)
    }

    fn put(&mut self, r: Record) -> Result<()> {
        if r.value.len() > self.limits.max_value_bytes {
            return Err(Error::ValueTooLarge);
        }
        let mut db_key = b"r".to_vec();
        db_key.extend_from_slice(r.key.as_ref());
        let exists = self.node.repo().store().dht_get(&db_key).ok().flatten().is_some();
        if !exists {
            if self.records >= self.limits.max_records {
                return Err(Error::MaxRecords);
            }
            self.records += 1;
        }
        self.write(&[(&db_key, &encode_record(&r))], &[]);
        Ok(())
    }

    fn remove(&mut self, k: &RecordKey) {
        let mut db_key = b"r".to_vec();
        db_key.extend_from_slice(k.as_ref());
        if self.node.repo().store().dht_get(&db_key).ok().flatten().is_some() {
            self.records = self.records.saturating_sub(1);
            self.write(&[], &[&db_key]);
        }
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        let mut out = Vec::new();
        for (k, v) in self.scan(b"r", self.limits.max_records) {
            if let Some(r) = decode_record(RecordKey::from(k[1..].to_vec()), &v) {
                out.push(Cow::Owned(r));
            }
        }
        out.into_iter()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        let prefix = provider_prefix(record.key.as_ref());
        let existing = self.scan(&prefix, self.limits.max_providers_per_key + 1);
        let mut db_key = prefix.clone();
        db_key.extend_from_slice(&record.provider.to_bytes());
        let known = existing.iter().any(|(k, _)| *k == db_key);
        if !known {
            if existing.is_empty() {
                if self.provider_keys >= self.limits.max_provider_keys {
                    return Err(Error::MaxProvidedKeys);
                }
                self.provider_keys += 1;
            } else if existing.len() >= self.limits.max_providers_per_key && record.provider != self.local {
                // Full for this key: keep the providers we have (the spec allows keeping any k of them).
                return Ok(());
            }
        }
        let value = encode_provider(&record);
        let mut puts: Vec<(&[u8], &[u8])> = vec![(&db_key, &value)];
        let mut local_key = b"l".to_vec();
        local_key.extend_from_slice(record.key.as_ref());
        if record.provider == self.local {
            puts.push((&local_key, b""));
        }
        self.write(&puts, &[]);
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let prefix = provider_prefix(key.as_ref());
        let mut out = Vec::new();
        let mut expired = Vec::new();
        for (k, v) in self.scan(&prefix, self.limits.max_providers_per_key) {
            let Ok(peer) = PeerId::from_bytes(&k[prefix.len()..]) else { continue };
            match decode_provider(key, peer, &v) {
                Some(record) => out.push(record),
                None => expired.push(k),
            }
        }
        if !expired.is_empty() {
            let keys: Vec<&[u8]> = expired.iter().map(Vec::as_slice).collect();
            self.write(&[], &keys);
        }
        out
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        let mut out = Vec::new();
        for (k, _) in self.scan(b"l", self.limits.max_provider_keys) {
            let key = RecordKey::from(k[1..].to_vec());
            let mut db_key = provider_prefix(key.as_ref());
            db_key.extend_from_slice(&self.local.to_bytes());
            let Ok(Some(v)) = self.node.repo().store().dht_get(&db_key) else { continue };
            if let Some(record) = decode_provider(&key, self.local, &v) {
                out.push(Cow::Owned(record));
            }
        }
        out.into_iter()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        let prefix = provider_prefix(k.as_ref());
        let mut db_key = prefix.clone();
        db_key.extend_from_slice(&p.to_bytes());
        let mut deletes: Vec<Vec<u8>> = vec![db_key];
        if *p == self.local {
            let mut local_key = b"l".to_vec();
            local_key.extend_from_slice(k.as_ref());
            deletes.push(local_key);
        }
        let keys: Vec<&[u8]> = deletes.iter().map(Vec::as_slice).collect();
        self.write(&[], &keys);
        if self.scan(&prefix, 1).is_empty() {
            self.provider_keys = self.provider_keys.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::InitProfile;

    fn record(i: u32, provider: PeerId) -> ProviderRecord {
        ProviderRecord {
            key: RecordKey::new(&i.to_be_bytes()),
            provider,
            expires: Some(Instant::now() + Duration::from_secs(3600)),
            addresses: vec!["/ip4/127.0.0.1/tcp/4001".parse().expect("addr")],
        }
    }

    #[test]
    fn holds_far_more_than_1024_keys_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = PeerId::random();
        let other = PeerId::random();
        {
            let node = Arc::new(Node::init(dir.path(), InitProfile::Test).expect("init"));
            let mut store = DhtStore::new(node, local, DhtLimits::default());
            for i in 0..5000 {
                store.add_provider(record(i, if i % 2 == 0 { local } else { other })).expect("add");
            }
            assert_eq!(store.provider_key_count(), 5000);
        }
        let node = Arc::new(Node::open(dir.path()).expect("reopen"));
        let store = DhtStore::new(node, local, DhtLimits::default());
        assert_eq!(store.provider_key_count(), 5000);
        assert_eq!(store.provided().count(), 2500, "the node's own records are the even keys");
        let found = store.providers(&RecordKey::new(&4999u32.to_be_bytes()));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].provider, other);
        assert_eq!(found[0].addresses[0].to_string(), "/ip4/127.0.0.1/tcp/4001");
    }

    #[test]
    fn limits_and_expiry_hold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Arc::new(Node::init(dir.path(), InitProfile::Test).expect("init"));
        let limits = DhtLimits { max_provider_keys: 3, max_providers_per_key: 2, ..DhtLimits::default() };
        let mut store = DhtStore::new(node, PeerId::random(), limits);
        for i in 0..3 {
            store.add_provider(record(i, PeerId::random())).expect("add");
        }
        assert!(matches!(store.add_provider(record(9, PeerId::random())), Err(Error::MaxProvidedKeys)));
        for _ in 0..5 {
            store.add_provider(record(0, PeerId::random())).expect("full key is not an error");
        }
        assert_eq!(store.providers(&RecordKey::new(&0u32.to_be_bytes())).len(), 2);
        let mut stale = record(1, PeerId::random());
        stale.expires = Some(Instant::now());
        store.add_provider(stale).expect("add");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.providers(&RecordKey::new(&1u32.to_be_bytes())).len(), 1, "expired record dropped");
    }

    #[test]
    fn value_records_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Arc::new(Node::init(dir.path(), InitProfile::Test).expect("init"));
        let mut store = DhtStore::new(node, PeerId::random(), DhtLimits::default());
        let r = Record {
            key: RecordKey::new(b"k"),
            value: b"v".to_vec(),
            publisher: Some(PeerId::random()),
            expires: None,
        };
        store.put(r.clone()).expect("put");
        assert_eq!(store.get(&r.key).map(Cow::into_owned), Some(r.clone()));
        assert_eq!(store.records().count(), 1);
        store.remove(&r.key);
        assert!(store.get(&r.key).is_none());
        let big = Record { value: vec![0; 70_000], ..r };
        assert!(matches!(store.put(big), Err(Error::ValueTooLarge)));
    }
}
