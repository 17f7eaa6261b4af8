//! The renter side: `storage upload` (erasure-code a file into shards, find hosts, sign contracts, hand out
//! shards), `storage upload status`, `storage download` (rebuild from any k shards), and the rebuilding of
//! one lost shard that repair uses.
//!
//! An upload runs as a task: encode (on a blocking thread, streaming: memory is one stripe), then place the
//! shards, `PLACE_PARALLEL` at a time, each on a different host. A shard is placed when its host countersigned
//! the contract and then said it fetched and pinned the shard (`Stored`); a host that refuses, times out or
//! never confirms is skipped and the next candidate is asked. Once every shard is held, the renter drops its
//! own copies of the shards (the manifest stays pinned): from then on the file lives on the hosts.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use btfs_chunker::erasure::{ErasureParams, ShardDecoder, ShardEncoder, ShardFileBuilder, shard_leaves};
use btfs_chunker::manifest::UploadManifest;
use btfs_chunker::recipe::{ImportRecipe, RecipeHasher};
use btfs_chunker::{Block, Cid};
use btfs_contracts_client::contract::{Contract, SignedContract, quote_price};
use btfs_contracts_client::wire::{Request, Response, SignedHostAd};
use btfs_contracts_client::{B256, U256};
use libp2p::PeerId;
use rand::RngCore;
use serde::Serialize;

use super::host::contract_id_hex;
use super::records::{self, ContractRecord, ContractState, Reputation, Role, ShardRecord, UploadRecord, UploadState};
use super::{Market, MarketError, SettlementChoice, address_of_peer, hosts_key, now, proto};
use crate::net::bitswap::session::FetchOptions;
use crate::repo::store::{PinKind, Records};

/// Shards being placed at once.
const PLACE_PARALLEL: usize = 8;
/// How long a host has to answer a quote or a proposal.
const ASK_TIMEOUT: Duration = Duration::from_secs(20);
/// Hosts asked for quotes at once.
const QUOTE_PARALLEL: usize = 16;
/// Most hosts looked up in the DHT.
const MAX_HOSTS: usize = 200;
/// A shard fetch during download or repair gives up on a host when nothing arrives for this long.
const SHARD_STALL: Duration = Duration::from_secs(15);
/// Blocks written to the store at once while encoding.
const WRITE_BATCH: usize = 64;
/// While a renter waits for a host's `Stored`, it checks every `REACH_PROBE` that the host is still there:
/// connected, or reachable by a new dial.
const REACH_PROBE: Duration = Duration::from_secs(1);
/// How long one reachability probe may take (a dial to a silent address waits for the TCP timeout otherwise).
const REACH_DIAL: Duration = Duration::from_secs(5);
/// A host that no probe reached for this long without a break has vanished: the shard goes to the next
/// candidate without waiting out the fetch allowance (a minute and more). Long enough that a blip in either
/// side's network does not cost an honest host its contract.
const VANISHED_AFTER: Duration = Duration::from_secs(10);

/// What `storage upload` was asked for.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub data_shards: usize,
    pub parity_shards: usize,
    pub piece_size: usize,
    pub duration_secs: u64,
    /// The most the renter pays per GiB per day.
    pub max_price: Option<U256>,
    /// Peer ids (or `/p2p/` multiaddrs) to place on, instead of hosts found in the DHT.
    pub hosts: Vec<String>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        let d = ErasureParams::default();
        Self {
            data_shards: d.data_shards,
            parity_shards: d.parity_shards,
            piece_size: d.piece_size,
            duration_secs: 30 * 86_400,
            max_price: None,
            hosts: Vec::new(),
        }
    }
}

/// A host that quoted.
#[derive(Debug, Clone, Serialize)]
pub struct HostQuote {
    pub peer: String,
    pub address: String,
    pub price_per_gib_day: String,
    pub free_space: u64,
    pub settlement: String,
    pub reputation: f64,
    #[serde(skip)]
    ad: Option<SignedHostAd>,
}

/// What `storage download` did.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadReport {
    pub file: String,
    pub size: u64,
    /// The shards the file was rebuilt from.
    pub shards_used: Vec<u32>,
    /// Shards that could not be fetched.
    pub shards_missing: Vec<u32>,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Something written block by block to the store, with the gc lock held by the caller.
struct BlockSink<'a> {
    store: &'a crate::repo::store::BlockStore,
    pending: Vec<Block>,
    error: Option<String>,
}

impl BlockSink<'_> {
    fn push(&mut self, block: Block) {
        self.pending.push(block);
        if self.pending.len() >= WRITE_BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.error.is_none()
            && !self.pending.is_empty()
            && let Err(e) = self.store.put_many(self.pending.iter())
        {
            self.error = Some(e.to_string());
        }
        self.pending.clear();
    }
}

impl Market {
    /// Starts an upload of `file`; returns its session id at once. Progress: `upload_status`.
    pub async fn upload(self: &Arc<Self>, file: Cid, opts: UploadOptions) -> Result<String, MarketError> {
        let params = ErasureParams {
            data_shards: opts.data_shards,
            parity_shards: opts.parity_shards,
            piece_size: opts.piece_size,
        };
        params.validate().map_err(|e| MarketError::Invalid(e.to_string()))?;
        let c = self.config();
        if opts.duration_secs < c.payment_period.as_secs() {
            return Err(MarketError::Invalid(format!(
                "storage length {} s is shorter than one payment period ({} s)",
                opts.duration_secs,
                c.payment_period.as_secs()
            )));
        }
        if let SettlementChoice::Evm { vault: None, .. } = c.settlement {
            return Err(MarketError::Invalid(
                "Settlement.Backend is evm but Settlement.Vault is not set: run `btfs vault deploy` and \
                 `btfs vault deposit <amount>` first"
                    .into(),
            ));
        }
        let id = random_hex(8);
        let record = UploadRecord {
            id: id.clone(),
            file: file.to_string(),
            manifest: None,
            file_size: 0,
            data_shards: opts.data_shards as u32,
            parity_shards: opts.parity_shards as u32,
            piece_size: opts.piece_size as u64,
            shard_size: 0,
            duration_secs: opts.duration_secs,
            max_price: opts.max_price.map(|p| p.to_string()),
            hosts: opts.hosts.clone(),
            shards: Vec::new(),
            state: UploadState::Encoding,
            error: None,
            created: now(),
        };
        let saved = record.clone();
        self.blocking(move |m| records::Batch::default().upload(&saved).write(m.store())).await??;
        let me = self.clone();
        tokio::spawn(async move {
            let id = record.id.clone();
            if let Err(e) = me.run_upload(record).await {
                tracing::warn!(upload = %id, error = %e, "upload failed");
                let _ledger = me.ledger.lock().await;
                let id2 = id.clone();
                let reason = e.to_string();
                let _ = me
                    .blocking(move |m| -> Result<(), MarketError> {
                        if let Some(mut r) = m.upload_record(&id2)? {
                            r.state = UploadState::Failed;
                            r.error = Some(reason);
                            records::Batch::default().upload(&r).write(m.store())?;
                        }
                        Ok(())
                    })
                    .await;
            }
        });
        Ok(id)
    }

    async fn run_upload(self: &Arc<Self>, mut record: UploadRecord) -> Result<(), MarketError> {
        let file = Cid::try_from(record.file.as_str()).map_err(|e| MarketError::Invalid(e.to_string()))?;
        let params = ErasureParams {
            data_shards: record.data_shards as usize,
            parity_shards: record.parity_shards as usize,
            piece_size: record.piece_size as usize,
        };
        let (manifest, manifest_cid) = self.blocking(move |m| m.encode(file, params)).await??;
        record.manifest = Some(manifest_cid.to_string());
        record.file_size = manifest.file_size;
        record.shard_size = manifest.shard_size;
        record.shards = manifest
            .shards
            .iter()
            .enumerate()
            .map(|(i, cid)| ShardRecord {
                index: i as u32,
                cid: cid.to_string(),
                host: None,
                contract: None,
                former_hosts: Vec::new(),
                state: "pending".into(),
            })
            .collect();
        record.state = UploadState::Placing;
        {
            let _ledger = self.ledger.lock().await;
            let saved = record.clone();
            self.blocking(move |m| records::Batch::default().upload(&saved).write(m.store())).await??;
        }
        tracing::info!(upload = %record.id, manifest = %manifest_cid, shards = record.shards.len(), "encoded; placing shards");
        let candidates = self.find_hosts(&record).await?;
        let needed = record.shards.len();
        if candidates.len() < needed {
            return Err(MarketError::Failed(format!(
                "{needed} shards need {needed} different hosts, but only {} quoted within the terms",
                candidates.len()
            )));
        }
        let pool = Arc::new(tokio::sync::Mutex::new(candidates.into_iter().collect::<VecDeque<_>>()));
        let indices: Vec<u32> = (0..needed as u32).collect();
        let results = futures::future::join_all(indices.chunks(PLACE_PARALLEL).map(|chunk| {
            let chunk = chunk.to_vec();
            let pool = pool.clone();
            let me = self.clone();
            let id = record.id.clone();
            async move {
                let mut out = Vec::new();
                for index in chunk {
                    out.push((index, me.place_shard(&id, index, &pool).await));
                }
                out
            }
        }))
        .await;
        let failed: Vec<String> =
            results.into_iter().flatten().filter_map(|(i, r)| r.err().map(|e| format!("shard {i}: {e}"))).collect();
        if !failed.is_empty() {
            return Err(MarketError::Failed(failed.join("; ")));
        }
        // The local shard copies are unpinned by `renter_stored` when the last host confirms.
        Ok(())
    }

    /// Erasure-codes `file` into shards in the store (pinned until placed) and stores the manifest (pinned).
    fn encode(&self, file: Cid, params: ErasureParams) -> Result<(UploadManifest, Cid), MarketError> {
        let store = self.store();
        let recipe = ImportRecipe::detect(&file, &mut |cid: &Cid| store.get(cid).ok().flatten())
            .map_err(|e| MarketError::Invalid(format!("{file}: {e}")))?;
        let _writing = self.node.writing();
        let mut sink = BlockSink { store, pending: Vec::new(), error: None };
        // Leaf hashing (three bytes of shards per input byte at 10 + 20) is most of the work: use every core.
        let threads = std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN);
        let mut encoder =
            ShardEncoder::new(params).map_err(|e| MarketError::Invalid(e.to_string()))?.with_threads(threads);
        let mut hasher = RecipeHasher::new(&recipe);
        struct Feed<'a, 'b> {
            encoder: &'a mut ShardEncoder,
            hasher: &'a mut RecipeHasher,
            sink: &'a mut BlockSink<'b>,
        }
        impl Write for Feed<'_, '_> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.hasher.push(buf);
                let sink = &mut *self.sink;
                self.encoder.push(buf, &mut |b| sink.push(b)).map_err(std::io::Error::other)?;
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut feed = Feed { encoder: &mut encoder, hasher: &mut hasher, sink: &mut sink };
        self.node
            .cat(&file.to_string(), 0, None, &mut feed)
            .map_err(|e| MarketError::Failed(format!("reading {file}: {e}")))?;
        let encoded = encoder.finish(&mut |b| sink.push(b)).map_err(|e| MarketError::Failed(e.to_string()))?;
        let rebuilt = hasher.finish();
        if rebuilt != file {
            return Err(MarketError::Failed(format!(
                "{file} cannot be reproduced from its bytes with the detected import options (got {rebuilt}); \
                 it was not added as a plain UnixFS file"
            )));
        }
        let manifest = UploadManifest {
            file,
            file_size: encoded.file_size,
            erasure: params,
            shards: encoded.shards.iter().map(|s| s.cid).collect(),
            shard_size: encoded.shards.first().map_or(0, |s| s.size),
            recipe,
        };
        let block = manifest.to_block();
        let manifest_cid = block.cid;
        sink.push(block);
        sink.flush();
        if let Some(e) = sink.error {
            return Err(MarketError::Failed(format!("storing shards: {e}")));
        }
        // The manifest links to the file and every shard: a direct pin keeps it without keeping them.
        let mut pins: Vec<(Cid, PinKind)> = manifest.shards.iter().map(|c| (*c, PinKind::Recursive)).collect();
        pins.push((manifest_cid, PinKind::Direct));
        store.update_pins(&pins, &[])?;
        Ok((manifest, manifest_cid))
    }

    /// Quotes from the hosts named for `upload` or found in the DHT, within its terms, best first.
    pub(super) async fn find_hosts(self: &Arc<Self>, upload: &UploadRecord) -> Result<Vec<HostQuote>, MarketError> {
        let max_price = upload.max_price.as_deref().and_then(|p| p.parse::<U256>().ok());
        self.quotes(&upload.hosts, upload.shard_size, upload.duration_secs, max_price).await
    }

    /// Asks hosts for quotes: the ones named, or those in the DHT. Only verified quotes from hosts whose ad
    /// names their own peer's address, within `max_price`, come back, ranked by price then reputation.
    pub async fn quotes(
        self: &Arc<Self>,
        named: &[String],
        shard_size: u64,
        duration_secs: u64,
        max_price: Option<U256>,
    ) -> Result<Vec<HostQuote>, MarketError> {
        let mut peers = Vec::new();
        for text in named {
            let bare = text.rsplit("/p2p/").next().unwrap_or(text);
            let peer: PeerId =
                bare.parse().map_err(|e| MarketError::Invalid(format!("--hosts: {text:?} is not a peer id: {e}")))?;
            if text.starts_with('/') {
                let addr = text.parse().map_err(|e| MarketError::Invalid(format!("--hosts: {text:?}: {e}")))?;
                self.network.swarm.connect(addr).await.map_err(MarketError::Failed)?;
            }
            peers.push(peer);
        }
        if named.is_empty() {
            let mut rx = self.network.swarm.find_providers(hosts_key(), MAX_HOSTS).await;
            while let Some(peer) = rx.recv().await {
                if peer != self.network.peer_id && !peers.contains(&peer) {
                    peers.push(peer);
                }
            }
        }
        let asked = futures::stream::iter(peers.into_iter().map(|peer| {
            let me = self.clone();
            async move {
                let req = Request::Quote { shard_size, duration_secs };
                (peer, proto::request(&me, peer, &req, ASK_TIMEOUT).await)
            }
        }))
        .buffer_unordered(QUOTE_PARALLEL);
        use futures::StreamExt;
        let answers: Vec<_> = asked.collect().await;
        let (chain_id, token, _) = self.config().chain();
        let mut quotes = Vec::new();
        for (peer, answer) in answers {
            let ad = match answer {
                Ok(Response::Quote(ad)) => ad,
                Ok(Response::Refused { reason, .. }) => {
                    tracing::debug!(%peer, %reason, "host refused to quote");
                    continue;
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "no quote");
                    continue;
                }
            };
            if let Err(e) = ad.verify(now()) {
                tracing::info!(%peer, error = %e, "quote with a bad signature ignored");
                continue;
            }
            if address_of_peer(&peer) != Some(ad.ad.host) || ad.ad.peer_id != peer.to_string() {
                tracing::info!(%peer, "quote for another identity ignored");
                continue;
            }
            if ad.ad.chain_id != chain_id || ad.ad.token != token {
                tracing::debug!(%peer, "host settles on another chain or token");
                continue;
            }
            if max_price.is_some_and(|max| ad.ad.price_per_gib_day > max) {
                continue;
            }
            let reputation = self.reputation(&peer.to_string()).score();
            quotes.push(HostQuote {
                peer: peer.to_string(),
                address: format!("{:#x}", ad.ad.host),
                price_per_gib_day: ad.ad.price_per_gib_day.to_string(),
                free_space: ad.ad.free_space,
                settlement: ad.ad.settlement.to_string(),
                reputation,
                ad: Some(ad),
            });
        }
        quotes.sort_by(|a, b| {
            let pa = a.ad.as_ref().map(|x| x.ad.price_per_gib_day);
            let pb = b.ad.as_ref().map(|x| x.ad.price_per_gib_day);
            pa.cmp(&pb).then(b.reputation.total_cmp(&a.reputation))
        });
        Ok(quotes)
    }

    pub(super) fn reputation(&self, peer: &str) -> Reputation {
        records::get(self.store(), Records::Market, &format!("rep/{peer}")).ok().flatten().unwrap_or_default()
    }

    /// Places shard `index` of `upload` on the next host from `pool` that is not already used by the upload.
    pub(super) async fn place_shard(
        self: &Arc<Self>,
        upload: &str,
        index: u32,
        pool: &tokio::sync::Mutex<VecDeque<HostQuote>>,
    ) -> Result<(), MarketError> {
        loop {
            let record = self.upload_record(upload)?.ok_or_else(|| MarketError::NoUpload(upload.to_string()))?;
            let used: HashSet<String> =
                record.shards.iter().flat_map(|s| s.host.iter().chain(s.former_hosts.iter()).cloned()).collect();
            let candidate = {
                let mut pool = pool.lock().await;
                let mut found = None;
                let mut skipped = Vec::new();
                while let Some(q) = pool.pop_front() {
                    if used.contains(&q.peer) {
                        skipped.push(q);
                    } else {
                        found = Some(q);
                        break;
                    }
                }
                pool.extend(skipped);
                found
            };
            let Some(quote) = candidate else {
                return Err(MarketError::Failed(
                    "no more hosts to try (each host takes at most one shard of a file)".into(),
                ));
            };
            match self.propose_to(&record, index, &quote).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(upload, index, host = %quote.peer, error = %e, "host did not take the shard; trying another");
                    let _ledger = self.ledger.lock().await;
                    let (id, peer) = (upload.to_string(), quote.peer.clone());
                    self.blocking(move |m| -> Result<(), MarketError> {
                        if let Some(mut r) = m.upload_record(&id)? {
                            if let Some(s) = r.shards.get_mut(index as usize) {
                                if s.host.as_deref() == Some(peer.as_str()) {
                                    s.host = None;
                                    s.contract = None;
                                }
                                s.former_hosts.push(peer);
                                s.state = "pending".into();
                            }
                            records::Batch::default().upload(&r).write(m.store())?;
                        }
                        Ok(())
                    })
                    .await??;
                }
            }
        }
    }

    /// Signs a contract for one shard with one host, and waits until the host holds the shard.
    async fn propose_to(
        self: &Arc<Self>,
        upload: &UploadRecord,
        index: u32,
        quote: &HostQuote,
    ) -> Result<(), MarketError> {
        let ad = quote.ad.as_ref().ok_or_else(|| MarketError::Failed("quote without an ad".into()))?;
        let peer: PeerId = quote.peer.parse().map_err(|_| MarketError::Failed("bad peer id".into()))?;
        let shard = upload.shards.get(index as usize).ok_or_else(|| MarketError::Failed("no such shard".into()))?;
        let shard_cid = Cid::try_from(shard.cid.as_str()).map_err(|e| MarketError::Failed(e.to_string()))?;
        let c = self.config();
        let (chain_id, token, vault) = c.chain();
        let start = now();
        let mut id_bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut id_bytes);
        let contract_id = B256::from(id_bytes);
        let mut upload_bytes = [0u8; 32];
        let text = upload.id.as_bytes();
        upload_bytes[..text.len().min(32)].copy_from_slice(&text[..text.len().min(32)]);
        let upload_id = B256::from(upload_bytes);
        let price = quote_price(upload.shard_size, upload.duration_secs, ad.ad.price_per_gib_day);
        let upfront = price * U256::from(c.upfront_percent) / U256::from(100u8);
        let contract = Contract {
            contract_id,
            renter: self.address,
            host: ad.ad.host,
            shard_cid: shard_cid.to_bytes(),
            shard_size: upload.shard_size,
            shard_index: u64::from(index),
            upload_id,
            start,
            end: start + upload.duration_secs,
            price,
            upfront,
            period: c.payment_period.as_secs(),
            challenge_interval: u32::try_from(c.challenge_interval.as_secs()).unwrap_or(u32::MAX),
            challenge_deadline: u32::try_from(c.challenge_deadline.as_secs()).unwrap_or(u32::MAX),
            failure_threshold: c.failure_threshold,
            chain_id,
            token,
            vault,
        };
        let signed =
            SignedContract::sign_renter(contract, &self.key).map_err(|e| MarketError::Failed(e.to_string()))?;
        let id = contract_id_hex(&contract_id);
        tracing::debug!(contract = %id, host = %peer, index, %price, %upfront, secs = upload.duration_secs, "proposing");
        let answer = proto::request(self, peer, &Request::Propose { contract: signed.clone() }, ASK_TIMEOUT)
            .await
            .map_err(|e| MarketError::Failed(e.to_string()))?;
        let countersigned = match answer {
            Response::Accepted { contract } => contract,
            Response::Refused { code, reason } => {
                return Err(MarketError::Failed(format!("refused ({code:?}): {reason}")));
            }
            other => return Err(MarketError::Failed(format!("unexpected answer {other:?}"))),
        };
        if countersigned.contract != signed.contract {
            return Err(MarketError::Failed("host countersigned different terms".into()));
        }
        countersigned.verify_complete().map_err(|e| MarketError::Failed(format!("bad countersignature: {e}")))?;
        let record = ContractRecord {
            id: id.clone(),
            role: Role::Renter,
            contract: countersigned,
            peer: peer.to_string(),
            state: ContractState::Placed,
            upload: Some(upload.id.clone()),
            shard_index: index,
            shard_cid: shard.cid.clone(),
            piece_size: upload.piece_size,
            proofs_passed: 0,
            proofs_failed: 0,
            failures_in_a_row: 0,
            failed_periods: Vec::new(),
            periods_settled: 0,
            upfront_paid: false,
            paid: "0".into(),
            next_challenge: 0,
            reason: None,
        };
        {
            let _ledger = self.ledger.lock().await;
            let (upload_id, peer_text, cid) = (upload.id.clone(), peer.to_string(), id.clone());
            self.blocking(move |m| -> Result<(), MarketError> {
                let mut batch = records::Batch::default();
                batch.contract(&record);
                if let Some(mut u) = m.upload_record(&upload_id)? {
                    if let Some(s) = u.shards.get_mut(index as usize) {
                        s.host = Some(peer_text);
                        s.contract = Some(cid);
                        s.state = "placed".into();
                    }
                    batch.upload(&u);
                }
                batch.write(m.store())?;
                Ok(())
            })
            .await??;
        }
        // The host fetches the shard now; give it time in proportion to the size (at 1 MB/s at worst).
        let wait = Duration::from_secs(60 + upload.shard_size / 1_000_000);
        let deadline = tokio::time::Instant::now() + wait;
        let mut next_probe = tokio::time::Instant::now() + REACH_PROBE;
        let mut unreachable_since: Option<tokio::time::Instant> = None;
        let mut vanished = None;
        loop {
            let lookup = id.clone();
            let state = self.blocking(move |m| m.contract_record(&lookup)).await??.map(|r| r.state);
            let now = tokio::time::Instant::now();
            match state {
                Some(ContractState::Active) => return Ok(()),
                Some(ContractState::Placed) if now < deadline => {
                    if now >= next_probe {
                        match tokio::time::timeout(REACH_DIAL, self.network.swarm.connect_peer(peer)).await {
                            Ok(Ok(_)) => unreachable_since = None,
                            failed => {
                                let since = *unreachable_since.get_or_insert(now);
                                if since.elapsed() >= VANISHED_AFTER {
                                    vanished = Some(match failed {
                                        Ok(Err(reason)) => reason,
                                        _ => format!("no connection within {} s", REACH_DIAL.as_secs()),
                                    });
                                    break;
                                }
                            }
                        }
                        next_probe = tokio::time::Instant::now() + REACH_PROBE;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                _ => break,
            }
        }
        let reason = match vanished {
            Some(last) => format!(
                "the host vanished before confirming it holds the shard (unreachable for {} s: {last})",
                VANISHED_AFTER.as_secs()
            ),
            None => format!("the host did not confirm it holds the shard within {} s", wait.as_secs()),
        };
        let _ledger = self.ledger.lock().await;
        let (lookup, recorded) = (id.clone(), reason.clone());
        let state = self
            .blocking(move |m| -> Result<Option<ContractState>, MarketError> {
                let Some(mut r) = m.contract_record(&lookup)? else { return Ok(None) };
                if r.state == ContractState::Placed {
                    r.state = ContractState::Failed;
                    r.reason = Some(recorded);
                    records::Batch::default().contract(&r).write(m.store())?;
                }
                Ok(Some(r.state))
            })
            .await??;
        if state == Some(ContractState::Active) {
            // `Stored` arrived while the last probe ran: the host holds the shard after all.
            return Ok(());
        }
        tracing::warn!(contract = %id, host = %peer, %reason, "shard not placed");
        Err(MarketError::Failed(format!("host {peer}: {reason}")))
    }

    /// A host says it holds the shard of one of our contracts.
    pub(super) async fn renter_stored(
        self: &Arc<Self>,
        peer: PeerId,
        contract_id: B256,
    ) -> Result<Response, (btfs_contracts_client::wire::RefuseCode, String)> {
        use btfs_contracts_client::wire::RefuseCode;
        let id = contract_id_hex(&contract_id);
        let _ledger = self.ledger.lock().await;
        let peer_text = peer.to_string();
        self.blocking(move |m| -> Result<Response, (RefuseCode, String)> {
            let busy = |e: &dyn std::fmt::Display| (RefuseCode::Busy, e.to_string());
            let mut r = m
                .contract_record(&id)
                .map_err(|e| busy(&e))?
                .filter(|r| r.role == Role::Renter && r.peer == peer_text)
                .ok_or_else(|| (RefuseCode::UnknownContract, format!("no contract {id} with {peer_text}")))?;
            if r.state != ContractState::Placed {
                return Ok(Response::Ack);
            }
            r.state = ContractState::Active;
            // The first challenge comes at once: `Stored` is only the host's word, and its upfront part (and every
            // period's payment) waits for a passed proof.
            r.next_challenge = now();
            let mut batch = records::Batch::default();
            batch.contract(&r);
            if let Some(upload) = &r.upload
                && let Some(mut u) = m.upload_record(upload).map_err(|e| busy(&e))?
            {
                if let Some(s) = u.shards.get_mut(r.shard_index as usize) {
                    s.state = "stored".into();
                }
                if u.shards.iter().all(|s| s.state == "stored") {
                    u.state = UploadState::Active;
                    // Unpinned before the state is written, so that whoever sees the upload active can
                    // collect the local copies.
                    let remove: Vec<Cid> = u.shards.iter().filter_map(|s| Cid::try_from(s.cid.as_str()).ok()).collect();
                    m.store().update_pins(&[], &remove).map_err(|e| busy(&e))?;
                    tracing::info!(upload = %u.id, "every shard is held by a host; local copies unpinned");
                }
                batch.upload(&u);
            }
            batch.write(m.store()).map_err(|e| busy(&e))?;
            tracing::info!(contract = %id, host = %peer_text, "host holds the shard");
            Ok(Response::Ack)
        })
        .await
        .map_err(|e| (RefuseCode::Busy, e.to_string()))?
    }

    /// The status of an upload, as `storage upload status` prints it.
    pub fn upload_status(&self, id: &str) -> Result<serde_json::Value, MarketError> {
        let upload = self.upload_record(id)?.ok_or_else(|| MarketError::NoUpload(id.to_string()))?;
        let contracts: Vec<ContractRecord> =
            self.contracts()?.into_iter().filter(|c| c.upload.as_deref() == Some(id)).collect();
        let shards: Vec<serde_json::Value> = upload
            .shards
            .iter()
            .map(|s| {
                let c = s.contract.as_ref().and_then(|cid| contracts.iter().find(|c| &c.id == cid));
                let history: Vec<&ContractRecord> = contracts.iter().filter(|c| c.shard_index == s.index).collect();
                serde_json::json!({
                    "Index": s.index,
                    "Cid": s.cid,
                    "State": s.state,
                    "Host": s.host,
                    "ContractId": s.contract,
                    "ContractState": c.map(|c| c.state),
                    "ProofsPassed": c.map_or(0, |c| c.proofs_passed),
                    "ProofsFailed": c.map_or(0, |c| c.proofs_failed),
                    "Paid": c.map_or_else(|| "0".to_string(), |c| c.paid.clone()),
                    "FormerHosts": s.former_hosts,
                    "Contracts": history.len(),
                })
            })
            .collect();
        Ok(serde_json::json!({
            "Id": upload.id,
            "File": upload.file,
            "Manifest": upload.manifest,
            "State": upload.state,
            "Error": upload.error,
            "FileSize": upload.file_size,
            "DataShards": upload.data_shards,
            "ParityShards": upload.parity_shards,
            "ShardSize": upload.shard_size,
            "Settlement": self.settlement_label(),
            "Shards": shards,
        }))
    }

    pub(super) fn settlement_label(&self) -> &'static str {
        match self.config().settlement {
            super::SettlementChoice::None => "unsettled",
            super::SettlementChoice::Evm { .. } => "evm",
        }
    }

    /// Fetches `k` whole shards from whoever holds them, skipping `skip`: first every shard's root at once
    /// (so dead hosts cost one stall, not one each), then the full DAGs of the first `k` that answered, data
    /// shards first (they decode without arithmetic), all at once. Returns the indices fetched and those
    /// that could not be had.
    async fn fetch_shards(&self, shards: &[Cid], k: usize, skip: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let probe = FetchOptions { recursive: false, stall: SHARD_STALL };
        let roots =
            futures::future::join_all(shards.iter().enumerate().filter(|(i, _)| !skip.contains(i)).map(|(i, cid)| {
                let bitswap = self.network.bitswap.clone();
                let opts = probe.clone();
                async move { (i, bitswap.fetch(vec![*cid], opts).await.is_ok()) }
            }))
            .await;
        let mut missing: Vec<usize> = roots.iter().filter(|(_, ok)| !ok).map(|(i, _)| *i).collect();
        let mut candidates: VecDeque<usize> = roots.iter().filter(|(_, ok)| *ok).map(|(i, _)| *i).collect();
        let mut have = Vec::new();
        while have.len() < k && !candidates.is_empty() {
            let batch: Vec<usize> = (0..k - have.len()).map_while(|_| candidates.pop_front()).collect();
            let fetched = futures::future::join_all(batch.iter().map(|&i| {
                let bitswap = self.network.bitswap.clone();
                let opts = FetchOptions { recursive: true, stall: SHARD_STALL };
                let cid = shards[i];
                async move { (i, bitswap.fetch(vec![cid], opts).await) }
            }))
            .await;
            for (i, result) in fetched {
                match result {
                    Ok(_) => have.push(i),
                    Err(e) => {
                        tracing::info!(shard = i, error = %e, "shard unavailable");
                        missing.push(i);
                    }
                }
            }
        }
        have.sort_unstable();
        missing.sort_unstable();
        (have, missing)
    }

    /// Rebuilds a file from any `k` of its shards into `out`, checking that the bytes re-add to the file's
    /// original CID. `target` is the file CID (of one of this node's uploads) or a manifest CID.
    pub async fn download(self: &Arc<Self>, target: Cid, out: &Path) -> Result<DownloadReport, MarketError> {
        let manifest_cid = self.manifest_for(target)?;
        let opts = FetchOptions { recursive: false, stall: SHARD_STALL };
        self.network.bitswap.fetch(vec![manifest_cid], opts).await.map_err(|e| MarketError::Failed(e.to_string()))?;
        let manifest = {
            let data = self
                .store()
                .get_local(&manifest_cid)?
                .ok_or_else(|| MarketError::Failed(format!("manifest {manifest_cid} not found")))?;
            UploadManifest::from_block(&data)
                .map_err(|e| MarketError::Failed(format!("manifest {manifest_cid}: {e}")))?
        };
        let k = manifest.erasure.data_shards;
        let (have, missing) = self.fetch_shards(&manifest.shards, k, &[]).await;
        if have.len() < k {
            return Err(MarketError::Failed(format!(
                "only {} of the {k} shards needed could be fetched ({} unavailable)",
                have.len(),
                missing.len()
            )));
        }
        let out = out.to_path_buf();
        let used = have.clone();
        self.blocking(move |m| m.rebuild_file(&manifest, &used, &out)).await??;
        Ok(DownloadReport {
            file: target.to_string(),
            size: 0,
            shards_used: have.iter().map(|i| *i as u32).collect(),
            shards_missing: missing.iter().map(|i| *i as u32).collect(),
        })
        .map(|mut r| {
            r.size = std::fs::metadata(&r.file).map(|m| m.len()).unwrap_or(0);
            r
        })
    }

    fn manifest_for(&self, target: Cid) -> Result<Cid, MarketError> {
        if target.codec() == 0x71 {
            return Ok(target);
        }
        let text = target.to_string();
        self.uploads()?
            .into_iter()
            .filter(|u| u.file == text)
            .find_map(|u| u.manifest.and_then(|m| Cid::try_from(m.as_str()).ok()))
            .ok_or_else(|| {
                MarketError::Invalid(format!("no upload of {target} on this node; give the manifest CID instead"))
            })
    }

    /// Streams the file out of the local copies of the shards in `have` (at least k), stripe by stripe.
    fn rebuild_file(&self, manifest: &UploadManifest, have: &[usize], out: &Path) -> Result<(), MarketError> {
        let store = self.store();
        let mut get = |cid: &Cid| store.get_local(cid).ok().flatten();
        let total = manifest.erasure.total_shards();
        let mut leaves: Vec<Option<Vec<Cid>>> = vec![None; total];
        for &i in have {
            leaves[i] =
                Some(shard_leaves(&manifest.shards[i], &mut get).map_err(|e| MarketError::Failed(e.to_string()))?);
        }
        let params = manifest.erasure;
        let mut decoder =
            ShardDecoder::new(params, manifest.file_size).map_err(|e| MarketError::Failed(e.to_string()))?;
        let mut hasher = RecipeHasher::new(&manifest.recipe);
        let tmp = out.with_extension("btfs-partial");
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&tmp).map_err(|e| MarketError::Failed(format!("{}: {e}", tmp.display())))?,
        );
        let stripes = leaves.iter().flatten().next().map_or(0, Vec::len);
        let result = (|| -> Result<(), MarketError> {
            for s in 0..stripes {
                let mut pieces: Vec<Option<Vec<u8>>> = vec![None; total];
                for &i in have {
                    let cid = leaves[i].as_ref().and_then(|l| l.get(s)).copied();
                    pieces[i] = cid.and_then(|c| get(&c));
                }
                let data =
                    decoder.decode_stripe(&mut pieces).map_err(|e| MarketError::Failed(format!("stripe {s}: {e}")))?;
                hasher.push(&data);
                file.write_all(&data).map_err(|e| MarketError::Failed(format!("{}: {e}", tmp.display())))?;
            }
            file.flush().map_err(|e| MarketError::Failed(format!("{}: {e}", tmp.display())))?;
            let rebuilt = hasher.finish();
            if rebuilt != manifest.file {
                return Err(MarketError::Failed(format!(
                    "the rebuilt file hashes to {rebuilt}, not {}: refusing it",
                    manifest.file
                )));
            }
            std::fs::rename(&tmp, out).map_err(|e| MarketError::Failed(format!("{}: {e}", out.display())))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Rebuilds shard `lost` of an upload from `k` others into the store (pinned until placed); the rebuilt
    /// shard must get its original CID.
    pub(super) async fn rebuild_shard(
        self: &Arc<Self>,
        manifest: UploadManifest,
        lost: usize,
    ) -> Result<(), MarketError> {
        let k = manifest.erasure.data_shards;
        let (have, _) = self.fetch_shards(&manifest.shards, k, &[lost]).await;
        if have.len() < k {
            return Err(MarketError::Failed(format!(
                "only {} of {k} shards reachable; cannot rebuild shard {lost}",
                have.len()
            )));
        }
        self.blocking(move |m| -> Result<(), MarketError> {
            let store = m.store();
            let mut get = |cid: &Cid| store.get_local(cid).ok().flatten();
            let total = manifest.erasure.total_shards();
            let mut leaves: Vec<Option<Vec<Cid>>> = vec![None; total];
            for &i in &have {
                leaves[i] =
                    Some(shard_leaves(&manifest.shards[i], &mut get).map_err(|e| MarketError::Failed(e.to_string()))?);
            }
            let params = manifest.erasure;
            let decoder =
                ShardDecoder::new(params, manifest.file_size).map_err(|e| MarketError::Failed(e.to_string()))?;
            let _writing = m.node.writing();
            let mut sink = BlockSink { store, pending: Vec::new(), error: None };
            let mut builder = ShardFileBuilder::new(manifest.erasure.piece_size);
            let stripes = leaves.iter().flatten().next().map_or(0, Vec::len);
            for s in 0..stripes {
                let mut pieces: Vec<Option<Vec<u8>>> = vec![None; total];
                for &i in &have {
                    let cid = leaves[i].as_ref().and_then(|l| l.get(s)).copied();
                    pieces[i] = cid.and_then(|c| get(&c));
                }
                decoder.reconstruct_all(&mut pieces).map_err(|e| MarketError::Failed(format!("stripe {s}: {e}")))?;
                let piece = pieces[lost].as_deref().ok_or_else(|| MarketError::Failed("piece not rebuilt".into()))?;
                builder
                    .push_piece(piece, &mut |b| sink.push(b))
                    .map_err(|e| MarketError::Failed(format!("stripe {s}: {e}")))?;
            }
            let info = builder.finish(&mut |b| sink.push(b));
            sink.flush();
            if let Some(e) = sink.error {
                return Err(MarketError::Failed(format!("storing the rebuilt shard: {e}")));
            }
            if info.cid != manifest.shards[lost] {
                return Err(MarketError::Failed(format!(
                    "rebuilt shard {lost} is {}, expected {}",
                    info.cid, manifest.shards[lost]
                )));
            }
            store.update_pins(&[(info.cid, PinKind::Recursive)], &[])?;
            Ok(())
        })
        .await?
    }
}
