//! The market's clock: every `Storage.CheckInterval` it walks the contracts and does what is due.
//!
//! Renter side: challenge each active contract on schedule (a fresh random leaf each time, answered within
//! `ChallengeDeadline`, checked against the shard CID); pay the upfront part once the host has passed a
//! challenge (its `Stored` notice alone earns nothing) and one cumulative cheque per period that had no failed
//! challenge; resend cheques a host has not
//! acknowledged (cumulative cheques make that safe); declare a contract lost after `FailureThreshold` failures
//! in a row and, with `Storage.Repair`, rebuild its shard from k others and place it on a new host.
//! Host side: end contracts past their end time, release those whose renter stopped paying, resume shard
//! fetches a restart interrupted, and cash cheques past `Settlement.CashThreshold`.
//!
//! Each contract's work runs in its own task; `running` keeps one task per contract or repair at a time.

use std::sync::Arc;
use std::time::Duration;

use btfs_chunker::Cid;
use btfs_chunker::proof::{self, StorageProof};
use btfs_contracts_client::cheque::{Cheque, SignedCheque};
use btfs_contracts_client::wire::{Request, Response};
use btfs_contracts_client::{B256, U256};
use libp2p::PeerId;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::records::{
    self, ContractRecord, ContractState, ReceivedCheques, Reputation, Role, SentCheques, UploadState,
};
use super::{Market, MarketError, SettlementChoice, now, proto};
use crate::repo::store::Records;

/// Periods a host waits for a payment that is due before it lets the shard go.
const UNPAID_GRACE_PERIODS: u64 = 2;

pub(super) async fn run(market: Arc<Market>, shutdown: CancellationToken) {
    // Let the swarm settle before the first round.
    tokio::time::sleep(Duration::from_secs(1)).await;
    loop {
        if let Err(e) = market.round().await {
            tracing::warn!(error = %e, "market check failed");
        }
        let interval = market.config().check_interval;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Marks `key` as running for as long as the guard lives; `None` if it already runs.
struct Running {
    market: Arc<Market>,
    key: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut set) = self.market.running.lock() {
            set.remove(&self.key);
        }
    }
}

impl Market {
    fn start_task(self: &Arc<Self>, key: String) -> Option<Running> {
        let mut set = self.running.lock().ok()?;
        set.insert(key.clone()).then(|| Running { market: self.clone(), key })
    }

    async fn round(self: &Arc<Self>) -> Result<(), MarketError> {
        let contracts = self.blocking(|m| m.contracts()).await??;
        let t = now();
        for record in contracts {
            match (record.role, record.state) {
                (Role::Renter, ContractState::Active) => {
                    if let Some(guard) = self.start_task(format!("c/{}", record.id)) {
                        let me = self.clone();
                        tokio::spawn(async move {
                            let _guard = guard;
                            if let Err(e) = me.renter_duties(record).await {
                                tracing::warn!(error = %e, "renter contract check failed");
                            }
                        });
                    }
                }
                (Role::Host, ContractState::Active) => {
                    if let Some(guard) = self.start_task(format!("c/{}", record.id)) {
                        let me = self.clone();
                        tokio::spawn(async move {
                            let _guard = guard;
                            if let Err(e) = me.host_duties(record, t).await {
                                tracing::warn!(error = %e, "host contract check failed");
                            }
                        });
                    }
                }
                (Role::Host, ContractState::Fetching) => {
                    if let Some(guard) = self.start_task(format!("c/{}", record.id)) {
                        let me = self.clone();
                        tokio::spawn(async move {
                            let _guard = guard;
                            me.fetch_shard(record).await;
                        });
                    }
                }
                _ => {}
            }
        }
        self.resend_cheques().await?;
        self.repair_uploads().await?;
        self.cash_due().await?;
        Ok(())
    }

    /// Challenges, pays and ends one renter contract as due.
    async fn renter_duties(self: &Arc<Self>, record: ContractRecord) -> Result<(), MarketError> {
        let c = self.config();
        let t = now();
        let terms = &record.contract.contract;
        if t >= terms.end {
            return self.update_contract(&record.id, |r| r.state = ContractState::Ended).await;
        }
        if t >= record.next_challenge {
            self.challenge(&record, c.challenge_deadline).await?;
        }
        let record = self.contract_record(&record.id)?.ok_or_else(|| MarketError::NoContract(record.id.clone()))?;
        // The upfront part waits for the first passed proof: a host's `Stored` notice is only its word, and a
        // host that never held the shard must not be paid anything.
        if record.state == ContractState::Active && !record.upfront_paid && record.proofs_passed > 0 {
            self.pay(&record.id, None).await?;
        }
        // Periods that ended: pay each unless a challenge in it failed. None is paid before the first passed
        // proof (the upfront part marks it): a period in which no challenge was judged is not evidence of
        // anything, and a host that has never proved it holds the shard earns nothing.
        let period = terms.period.max(1);
        let elapsed = (t.saturating_sub(terms.start) / period).min(terms.periods());
        let record = self.contract_record(&record.id)?.ok_or_else(|| MarketError::NoContract(record.id.clone()))?;
        if record.state == ContractState::Active && record.upfront_paid {
            for p in record.periods_settled + 1..=elapsed {
                self.pay(&record.id, Some(p)).await?;
            }
        }
        Ok(())
    }

    /// Reads, changes and writes one contract under the ledger lock.
    pub(super) async fn update_contract(
        self: &Arc<Self>,
        id: &str,
        change: impl FnOnce(&mut ContractRecord) + Send + 'static,
    ) -> Result<(), MarketError> {
        let _ledger = self.ledger.lock().await;
        let id = id.to_string();
        self.blocking(move |m| -> Result<(), MarketError> {
            let mut r = m.contract_record(&id)?.ok_or(MarketError::NoContract(id))?;
            change(&mut r);
            records::Batch::default().contract(&r).write(m.store())?;
            Ok(())
        })
        .await?
    }

    /// One challenge: a random leaf, a deadline, the proof checked up to the shard CID.
    async fn challenge(self: &Arc<Self>, record: &ContractRecord, deadline: Duration) -> Result<(), MarketError> {
        let terms = &record.contract.contract;
        let piece = record.piece_size.max(1);
        let leaves = terms.shard_size.div_ceil(piece).max(1);
        let index = rand::rng().random_range(0..leaves);
        let shard = Cid::try_from(record.shard_cid.as_str()).map_err(|e| MarketError::Failed(e.to_string()))?;
        let peer: PeerId = record.peer.parse().map_err(|_| MarketError::Failed("bad peer id".into()))?;
        let req = Request::Challenge { contract_id: terms.contract_id, leaf_index: index };
        // A failure counts against the period the challenge was issued in, not the one its deadline ran out
        // in: a late answer near a period's end must not leave that period looking clean.
        let issued = now();
        let verdict = match proto::request(self, peer, &req, deadline).await {
            Ok(Response::Proof { path, leaf }) => proof::verify(&shard, index, piece, &StorageProof { path, leaf })
                .map_err(|e| format!("wrong proof for leaf {index}: {e}")),
            Ok(Response::Refused { reason, .. }) => Err(format!("refused the challenge: {reason}")),
            Ok(other) => Err(format!("answered the challenge with {other:?}")),
            Err(e) => Err(e.to_string()),
        };
        let c = self.config();
        let interval = c.challenge_interval.as_secs();
        let threshold = c.failure_threshold;
        let period = terms.period.max(1);
        let current_period = issued.saturating_sub(terms.start) / period + 1;
        let passed = verdict.is_ok();
        match &verdict {
            Ok(()) => tracing::debug!(contract = %record.id, index, "proof passed"),
            Err(reason) => tracing::warn!(contract = %record.id, host = %record.peer, %reason, "proof failed"),
        }
        let reason = verdict.err();
        let lost = {
            let _ledger = self.ledger.lock().await;
            let id = record.id.clone();
            let peer = record.peer.clone();
            self.blocking(move |m| -> Result<bool, MarketError> {
                let mut r = m.contract_record(&id)?.ok_or(MarketError::NoContract(id.clone()))?;
                let mut rep: Reputation =
                    records::get(m.store(), Records::Market, &format!("rep/{peer}"))?.unwrap_or_default();
                r.next_challenge = now() + interval;
                if passed {
                    r.proofs_passed += 1;
                    r.failures_in_a_row = 0;
                    rep.passed += 1;
                } else {
                    r.proofs_failed += 1;
                    r.failures_in_a_row += 1;
                    rep.failed += 1;
                    if !r.failed_periods.contains(&current_period) {
                        r.failed_periods.push(current_period);
                    }
                }
                let lost = r.state == ContractState::Active && r.failures_in_a_row >= threshold;
                let mut batch = records::Batch::default();
                if lost {
                    r.state = ContractState::Lost;
                    r.reason = Some(format!(
                        "{} challenges failed in a row; last: {}",
                        r.failures_in_a_row,
                        reason.unwrap_or_default()
                    ));
                    rep.lost += 1;
                    if let Some(upload) = &r.upload
                        && let Some(mut u) = m.upload_record(upload)?
                    {
                        if let Some(s) = u.shards.get_mut(r.shard_index as usize)
                            && s.contract.as_deref() == Some(r.id.as_str())
                        {
                            s.state = "lost".into();
                            if let Some(h) = s.host.take() {
                                s.former_hosts.push(h);
                            }
                            s.contract = None;
                        }
                        u.state = UploadState::Degraded;
                        batch.upload(&u);
                    }
                }
                batch.contract(&r).put(Records::Market, format!("rep/{peer}"), &rep);
                batch.write(m.store())?;
                Ok(lost)
            })
            .await??
        };
        if lost {
            tracing::warn!(contract = %record.id, host = %record.peer, "contract lost");
        }
        Ok(())
    }

    /// Pays the upfront part (`period` None) or period `p` of a contract with a new cumulative cheque, then
    /// sends it. A period with a failed challenge is settled without payment.
    async fn pay(self: &Arc<Self>, id: &str, period: Option<u64>) -> Result<(), MarketError> {
        let signed = {
            let _ledger = self.ledger.lock().await;
            let id = id.to_string();
            self.blocking(move |m| -> Result<Option<(SentCheques, B256)>, MarketError> {
                let mut r = m.contract_record(&id)?.ok_or(MarketError::NoContract(id.clone()))?;
                let terms = r.contract.contract.clone();
                let amount = match period {
                    None if r.upfront_paid => return Ok(None),
                    None => {
                        r.upfront_paid = true;
                        terms.amount_due_after(0)
                    }
                    Some(p) if p <= r.periods_settled => return Ok(None),
                    Some(p) => {
                        r.periods_settled = p;
                        if r.failed_periods.contains(&p) {
                            tracing::info!(contract = %id, period = p, "period not paid: a challenge failed");
                            records::Batch::default().contract(&r).write(m.store())?;
                            return Ok(None);
                        }
                        terms.amount_due_after(p) - terms.amount_due_after(p - 1)
                    }
                };
                let key = format!("sent/{:#x}", terms.host);
                let previous: Option<SentCheques> = records::get(m.store(), Records::Market, &key)?;
                let last = previous.as_ref().map_or(U256::ZERO, |s| s.last.cheque.cumulative_payout);
                let cheque = Cheque {
                    chain_id: terms.chain_id,
                    vault: terms.vault,
                    beneficiary: terms.host,
                    cumulative_payout: last + amount,
                };
                let signed = SignedCheque::sign(cheque, &m.key).map_err(|e| MarketError::Settlement(e.to_string()))?;
                let sent = SentCheques {
                    beneficiary: format!("{:#x}", terms.host),
                    peer: r.peer.clone(),
                    last: signed,
                    delivered: false,
                };
                r.paid = (r.paid.parse::<U256>().unwrap_or(U256::ZERO) + amount).to_string();
                records::Batch::default().contract(&r).put(Records::Market, key, &sent).write(m.store())?;
                tracing::info!(contract = %id, ?period, %amount, "cheque signed");
                Ok(Some((sent, terms.contract_id)))
            })
            .await??
        };
        if let Some((sent, contract_id)) = signed {
            self.deliver(sent, contract_id).await;
        }
        Ok(())
    }

    /// Sends the latest cheque to its host; marks it delivered when the host takes it.
    async fn deliver(self: &Arc<Self>, sent: SentCheques, contract_id: B256) {
        let Ok(peer) = sent.peer.parse::<PeerId>() else { return };
        let req = Request::Pay { contract_id, cheque: sent.last.clone() };
        match proto::request(self, peer, &req, Duration::from_secs(20)).await {
            Ok(Response::ChequeAccepted { .. }) => {
                let _ledger = self.ledger.lock().await;
                let key = format!("sent/{}", sent.beneficiary);
                let total = sent.last.cheque.cumulative_payout;
                let _ = self
                    .blocking(move |m| -> Result<(), MarketError> {
                        if let Some(mut s) = records::get::<SentCheques>(m.store(), Records::Market, &key)?
                            && s.last.cheque.cumulative_payout == total
                        {
                            s.delivered = true;
                            records::Batch::default().put(Records::Market, key, &s).write(m.store())?;
                        }
                        Ok(())
                    })
                    .await;
            }
            Ok(Response::Refused { reason, .. }) => tracing::warn!(%peer, %reason, "host refused our cheque"),
            Ok(_) => {}
            Err(e) => tracing::debug!(%peer, error = %e, "cheque not delivered; will resend"),
        }
    }

    /// Resends every cheque a host has not acknowledged (a later cheque covers an earlier one).
    async fn resend_cheques(self: &Arc<Self>) -> Result<(), MarketError> {
        let pending: Vec<SentCheques> = self
            .blocking(|m| records::scan::<SentCheques>(m.store(), Records::Market, "sent/"))
            .await??
            .into_iter()
            .filter(|s| !s.delivered)
            .collect();
        let contracts = self.blocking(|m| m.contracts()).await??;
        for sent in pending {
            // Any contract with this host identifies the payment; the cheque itself is per host.
            let Some(c) = contracts.iter().find(|c| c.role == Role::Renter && c.peer == sent.peer) else { continue };
            let id = c.contract.contract.contract_id;
            if let Some(guard) = self.start_task(format!("pay/{}", sent.beneficiary)) {
                let me = self.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    me.deliver(sent, id).await;
                });
            }
        }
        Ok(())
    }

    /// Starts a repair for every shard of an upload that has no host.
    async fn repair_uploads(self: &Arc<Self>) -> Result<(), MarketError> {
        if !self.config().repair {
            return Ok(());
        }
        let uploads = self.blocking(|m| m.uploads()).await??;
        for upload in uploads.into_iter().filter(|u| u.state == UploadState::Degraded) {
            for shard in
                upload.shards.iter().filter(|s| s.state == "lost" || s.state == "pending" || s.state == "repairing")
            {
                let Some(guard) = self.start_task(format!("repair/{}/{}", upload.id, shard.index)) else { continue };
                let me = self.clone();
                let (id, index) = (upload.id.clone(), shard.index);
                tokio::spawn(async move {
                    let _guard = guard;
                    if let Err(e) = me.repair(&id, index).await {
                        tracing::warn!(upload = %id, shard = index, error = %e, "repair failed; will retry");
                    }
                });
            }
        }
        Ok(())
    }

    /// Rebuilds one shard from k others and places it on a new host under a new contract.
    async fn repair(self: &Arc<Self>, upload: &str, index: u32) -> Result<(), MarketError> {
        let record = self.upload_record(upload)?.ok_or_else(|| MarketError::NoUpload(upload.to_string()))?;
        let manifest_cid = record
            .manifest
            .as_deref()
            .and_then(|m| Cid::try_from(m).ok())
            .ok_or_else(|| MarketError::Failed("upload has no manifest".into()))?;
        let data = self
            .store()
            .get_local(&manifest_cid)?
            .ok_or_else(|| MarketError::Failed("manifest block missing".into()))?;
        let manifest = btfs_chunker::manifest::UploadManifest::from_block(&data)
            .map_err(|e| MarketError::Failed(e.to_string()))?;
        tracing::info!(upload, shard = index, "repairing: rebuilding the shard from the others");
        {
            let _ledger = self.ledger.lock().await;
            let id = upload.to_string();
            self.blocking(move |m| -> Result<(), MarketError> {
                if let Some(mut u) = m.upload_record(&id)? {
                    if let Some(s) = u.shards.get_mut(index as usize) {
                        s.state = "repairing".into();
                    }
                    records::Batch::default().upload(&u).write(m.store())?;
                }
                Ok(())
            })
            .await??;
        }
        self.rebuild_shard(manifest, index as usize).await?;
        let candidates = self.find_hosts(&record).await?;
        let pool = tokio::sync::Mutex::new(candidates.into_iter().collect());
        self.place_shard(upload, index, &pool).await?;
        tracing::info!(upload, shard = index, "shard repaired onto a new host");
        // Local copy no longer needed once every shard is held again.
        let id = upload.to_string();
        self.blocking(move |m| -> Result<(), MarketError> {
            if let Some(u) = m.upload_record(&id)?
                && u.state == UploadState::Active
            {
                let remove: Vec<Cid> = u.shards.iter().filter_map(|s| Cid::try_from(s.cid.as_str()).ok()).collect();
                m.store().update_pins(&[], &remove)?;
            }
            Ok(())
        })
        .await?
    }

    /// Ends or releases a host contract when due.
    async fn host_duties(self: &Arc<Self>, record: ContractRecord, t: u64) -> Result<(), MarketError> {
        let terms = &record.contract.contract;
        if t >= terms.end {
            let _ledger = self.ledger.lock().await;
            return self.end_host_contract(record, ContractState::Ended, "contract ended").await;
        }
        let period = terms.period.max(1);
        let elapsed = t.saturating_sub(terms.start) / period;
        if elapsed > UNPAID_GRACE_PERIODS {
            let due = terms.amount_due_after((elapsed - UNPAID_GRACE_PERIODS).min(terms.periods()));
            let paid = record.paid.parse::<U256>().unwrap_or(U256::ZERO);
            // A renter may withhold periods in which we failed a challenge; count those as paid.
            let withheld = U256::from(record.failed_periods.len() as u64)
                * (terms.price.saturating_sub(terms.upfront) / U256::from(terms.periods().max(1)));
            if paid + withheld < due {
                let _ledger = self.ledger.lock().await;
                let reason = format!("unpaid: received {paid} of {due} due");
                return self.end_host_contract(record, ContractState::Released, &reason).await;
            }
        }
        Ok(())
    }

    /// Cashes received cheques whose uncashed part passed the threshold (`evm` only).
    async fn cash_due(self: &Arc<Self>) -> Result<(), MarketError> {
        let SettlementChoice::Evm { cash_threshold, .. } = self.config().settlement else { return Ok(()) };
        let received =
            self.blocking(|m| records::scan::<ReceivedCheques>(m.store(), Records::Market, "recv/")).await??;
        for r in received {
            let cashed = r.cashed.parse::<U256>().unwrap_or(U256::ZERO);
            let total = r.last.cheque.cumulative_payout;
            if total > cashed
                && total - cashed >= cash_threshold
                && let Some(guard) = self.start_task(format!("cash/{}", r.vault))
            {
                let me = self.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    if let Err(e) = me.cash(r).await {
                        tracing::warn!(error = %e, "cashing failed; will retry");
                    }
                });
            }
        }
        Ok(())
    }

    /// Cashes one vault's latest cheque on chain and records how much is cashed.
    pub(super) async fn cash(self: &Arc<Self>, r: ReceivedCheques) -> Result<serde_json::Value, MarketError> {
        let settlement = self.settlement().await?;
        let outcome = settlement.cash(&r.last).await;
        let _ledger = self.ledger.lock().await;
        let key = format!("recv/{}/{}", r.vault, r.issuer);
        let vault = r.last.cheque.vault;
        let paid_out = settlement.paid_out(vault, self.address).await.ok().flatten();
        let error = outcome.as_ref().err().map(ToString::to_string);
        let key2 = key.clone();
        self.blocking(move |m| -> Result<(), MarketError> {
            if let Some(mut rec) = records::get::<ReceivedCheques>(m.store(), Records::Market, &key2)? {
                if let Some(p) = paid_out {
                    rec.cashed = p.to_string();
                }
                rec.last_cash_error = error;
                records::Batch::default().put(Records::Market, key2, &rec).write(m.store())?;
            }
            Ok(())
        })
        .await??;
        let receipt = outcome.map_err(|e| MarketError::Settlement(e.to_string()))?;
        tracing::info!(vault = %r.vault, ?receipt, "cheque cashed");
        Ok(serde_json::json!({ "Vault": r.vault, "Receipt": format!("{receipt:?}") }))
    }
}
