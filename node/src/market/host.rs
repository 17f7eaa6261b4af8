//! The host side: quotes, accepting or refusing contracts, fetching and pinning shards, answering challenges,
//! taking cheques, and letting shards go when their contracts end, are released, or go unpaid.
//!
//! A host never trusts the renter's word: the contract's signature must recover to the peer that sent it,
//! every term is checked against this host's settings, a cheque must be signed by the contract's renter,
//! drawn on the contract's vault, pay this host, and raise the running total (and, with the `evm` backend,
//! be covered by the vault's balance on chain). Refusals carry a code and a reason, and are logged.

use std::sync::Arc;
use std::time::Duration;

use btfs_chunker::Cid;
use btfs_contracts_client::cheque::{ChequeCheck, SignedCheque};
use btfs_contracts_client::contract::{HostTerms, SignedContract};
use btfs_contracts_client::wire::{HostAd, RefuseCode, Request, Response, SignedHostAd};
use btfs_contracts_client::{B256, U256};
use libp2p::PeerId;

use super::records::{self, ContractRecord, ContractState, ReceivedCheques, Role};
use super::{Market, SettlementChoice, address_of_peer, now, proto};
use crate::net::bitswap::session::FetchOptions;
use crate::repo::store::Records;

/// How far a contract's start may be from the host's clock (skew plus the time a proposal is in flight).
const START_SKEW: u64 = 300;
/// How long a quote is valid.
const QUOTE_TTL: u64 = 600;
/// A shard fetch gives up when no block has arrived for this long.
const FETCH_STALL: Duration = Duration::from_secs(60);
/// How long the host waits for the renter to take its `Stored` notice.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(20);

type Refusal = (RefuseCode, String);

pub(super) fn contract_id_hex(id: &B256) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

impl Market {
    fn terms(&self) -> HostTerms {
        let c = self.config();
        let (chain_id, token, _) = c.chain();
        HostTerms {
            host: self.address,
            price_per_gib_day: c.price_per_gib_day,
            max_shard_size: c.max_shard_size,
            min_duration: c.min_duration.as_secs(),
            max_duration: c.max_duration.as_secs(),
            chain_id,
            token,
            settlement: c.kind(),
            max_start_skew: START_SKEW,
        }
    }

    /// Bytes promised under live host contracts.
    fn committed(&self) -> Result<u64, records::RecordError> {
        Ok(self
            .contracts()
            .map_err(|e| records::RecordError::Corrupt { key: "contracts".into(), reason: e.to_string() })?
            .iter()
            .filter(|r| r.role == Role::Host && r.state.is_live())
            .map(|r| r.contract.contract.shard_size)
            .sum())
    }

    pub(super) fn host_quote(&self, shard_size: u64, duration_secs: u64) -> Result<Response, Refusal> {
        let c = self.config();
        if !c.host_enabled {
            return Err(Self::refuse(RefuseCode::Busy, "this node is not in host mode"));
        }
        let committed = self.committed().map_err(|e| Self::refuse(RefuseCode::Busy, e.to_string()))?;
        let free = c.max_storage.saturating_sub(committed);
        if shard_size > c.max_shard_size {
            return Err(Self::refuse(
                RefuseCode::ShardSize,
                format!("shard of {shard_size} bytes is over this host's limit of {}", c.max_shard_size),
            ));
        }
        if shard_size > free {
            return Err(Self::refuse(
                RefuseCode::Capacity,
                format!("only {free} bytes free, shard needs {shard_size}"),
            ));
        }
        if duration_secs < c.min_duration.as_secs() || duration_secs > c.max_duration.as_secs() {
            return Err(Self::refuse(
                RefuseCode::Duration,
                format!(
                    "duration {duration_secs} s is outside {}..={} s",
                    c.min_duration.as_secs(),
                    c.max_duration.as_secs()
                ),
            ));
        }
        let (chain_id, token, _) = c.chain();
        let issued_at = now();
        let ad = HostAd {
            host: self.address,
            peer_id: self.network.peer_id.to_string(),
            price_per_gib_day: c.price_per_gib_day,
            max_shard_size: c.max_shard_size,
            free_space: free,
            min_duration: c.min_duration.as_secs(),
            max_duration: c.max_duration.as_secs(),
            chain_id,
            token,
            settlement: c.kind(),
            issued_at,
            expires_at: issued_at + QUOTE_TTL,
        };
        SignedHostAd::sign(ad, &self.key)
            .map(Response::Quote)
            .map_err(|e| Self::refuse(RefuseCode::Busy, format!("cannot sign quote: {e}")))
    }

    pub(super) async fn host_propose(
        self: &Arc<Self>,
        peer: PeerId,
        signed: SignedContract,
    ) -> Result<Response, Refusal> {
        let c = self.config();
        if !c.host_enabled {
            return Err(Self::refuse(RefuseCode::Busy, "this node is not in host mode"));
        }
        signed.verify_renter().map_err(|e| Self::refuse(RefuseCode::BadSignature, e.to_string()))?;
        let renter = address_of_peer(&peer);
        if renter != Some(signed.contract.renter) {
            return Err(Self::refuse(
                RefuseCode::BadSignature,
                format!("contract names renter {} but was sent by {peer}", signed.contract.renter),
            ));
        }
        signed.validate_terms(now(), &self.terms()).map_err(|e| Self::refuse(RefuseCode::Terms, e.to_string()))?;
        if let SettlementChoice::Evm { .. } = c.settlement {
            // Cheques will be drawn on the named vault: it must be the renter's own, with money in it.
            let vault = signed.contract.vault;
            let settlement = self.settlement().await.map_err(|e| Self::refuse(RefuseCode::Busy, e.to_string()))?;
            match settlement.issuer(vault).await {
                Ok(Some(issuer)) if issuer == signed.contract.renter => {}
                Ok(other) => {
                    return Err(Self::refuse(
                        RefuseCode::Terms,
                        format!("vault {vault:#x} is not the renter's (issuer {other:?})"),
                    ));
                }
                Err(e) => return Err(Self::refuse(RefuseCode::Busy, format!("cannot check the vault: {e}"))),
            }
        }
        let shard = Cid::try_from(signed.contract.shard_cid.as_slice())
            .map_err(|e| Self::refuse(RefuseCode::Terms, format!("shard CID is invalid: {e}")))?;
        let id = contract_id_hex(&signed.contract.contract_id);
        let _ledger = self.ledger.lock().await;
        let me = self.clone();
        let check_id = id.clone();
        let (existing, committed) = self
            .blocking(move |m| (m.contract_record(&check_id), m.committed()))
            .await
            .map_err(|e| Self::refuse(RefuseCode::Busy, e.to_string()))?;
        if matches!(existing, Ok(Some(_))) {
            return Err(Self::refuse(RefuseCode::Terms, format!("contract {id} already exists")));
        }
        let committed = committed.map_err(|e| Self::refuse(RefuseCode::Busy, e.to_string()))?;
        if committed.saturating_add(signed.contract.shard_size) > c.max_storage {
            return Err(Self::refuse(
                RefuseCode::Capacity,
                format!(
                    "{} bytes committed of {}; no room for {}",
                    committed, c.max_storage, signed.contract.shard_size
                ),
            ));
        }
        let countersigned = signed
            .countersign(&self.key)
            .map_err(|e| Self::refuse(RefuseCode::Busy, format!("cannot countersign: {e}")))?;
        let record = ContractRecord {
            id: id.clone(),
            role: Role::Host,
            contract: countersigned.clone(),
            peer: peer.to_string(),
            state: ContractState::Fetching,
            upload: None,
            shard_index: u32::try_from(countersigned.contract.shard_index).unwrap_or(u32::MAX),
            shard_cid: shard.to_string(),
            piece_size: 0,
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
        let saved = record.clone();
        self.blocking(move |m| records::Batch::default().contract(&saved).write(m.store()))
            .await
            .and_then(|r| r.map_err(Into::into))
            .map_err(|e| Self::refuse(RefuseCode::Busy, e.to_string()))?;
        tracing::info!(contract = %id, %peer, shard = %shard, "accepted storage contract; fetching the shard");
        tokio::spawn(me.fetch_shard(record));
        Ok(Response::Accepted { contract: countersigned })
    }

    /// Fetches and pins a newly accepted shard, then tells the renter.
    pub(super) async fn fetch_shard(self: Arc<Self>, record: ContractRecord) {
        let Ok(shard) = Cid::try_from(record.shard_cid.as_str()) else { return };
        let opts = FetchOptions { recursive: true, stall: FETCH_STALL };
        let fetched = self.network.bitswap.fetch(vec![shard], opts).await;
        let expected = record.contract.contract.shard_size;
        let outcome = match fetched {
            Err(e) => Err(format!("shard could not be fetched: {e}")),
            Ok(_) => self
                .blocking(move |m| -> Result<(), String> {
                    let size = m.node.file_size(&shard.to_string()).map_err(|e| e.to_string())?;
                    if size != expected {
                        return Err(format!("shard is {size} bytes, the contract says {expected}"));
                    }
                    m.node.pin_add(&shard, true).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r),
        };
        let stored = outcome.is_ok();
        match &outcome {
            Ok(()) => tracing::info!(contract = %record.id, "shard stored and pinned"),
            Err(reason) => tracing::warn!(contract = %record.id, %reason, "giving up on the contract"),
        }
        // Changed on the current record: cheques may have been accepted under it while the shard was fetched,
        // and writing back the copy taken at acceptance would forget them.
        let changed = self
            .update_contract(&record.id, move |r| match outcome {
                Ok(()) => r.state = ContractState::Active,
                Err(reason) => {
                    r.state = ContractState::Released;
                    r.reason = Some(reason);
                }
            })
            .await;
        if let Err(e) = changed {
            tracing::error!(contract = %record.id, error = %e, "cannot save contract");
            return;
        }
        if stored {
            let Ok(peer) = record.peer.parse::<PeerId>() else { return };
            let req = Request::Stored { contract_id: record.contract.contract.contract_id };
            for attempt in 0..3u32 {
                match proto::request(&self, peer, &req, NOTIFY_TIMEOUT).await {
                    Ok(Response::Ack) => return,
                    Ok(other) => {
                        tracing::warn!(contract = %record.id, ?other, "renter did not take the stored notice");
                        return;
                    }
                    Err(e) => tracing::debug!(contract = %record.id, attempt, error = %e, "stored notice failed"),
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }

    /// Loads a host contract that `peer` (its renter) may act on.
    async fn host_contract(self: &Arc<Self>, peer: PeerId, contract_id: B256) -> Result<ContractRecord, Refusal> {
        let id = contract_id_hex(&contract_id);
        let lookup = id.clone();
        let record = self
            .blocking(move |m| m.contract_record(&lookup))
            .await
            .map_err(|e| Self::refuse(RefuseCode::Busy, e.to_string()))?
            .map_err(|e| Self::refuse(RefuseCode::Busy, e.to_string()))?
            .filter(|r| r.role == Role::Host)
            .ok_or_else(|| Self::refuse(RefuseCode::UnknownContract, format!("no contract {id}")))?;
        if record.peer != peer.to_string() {
            return Err(Self::refuse(RefuseCode::UnknownContract, format!("contract {id} is not with {peer}")));
        }
        Ok(record)
    }

    pub(super) async fn host_challenge(
        self: &Arc<Self>,
        peer: PeerId,
        contract_id: B256,
        leaf_index: u64,
    ) -> Result<Response, Refusal> {
        let record = self.host_contract(peer, contract_id).await?;
        if record.state != ContractState::Active {
            return Err(Self::refuse(RefuseCode::NotHeld, format!("contract {} is {:?}", record.id, record.state)));
        }
        let shard = Cid::try_from(record.shard_cid.as_str())
            .map_err(|e| Self::refuse(RefuseCode::NotHeld, format!("bad shard CID: {e}")))?;
        let proof = self
            .blocking(move |m| {
                let store = m.store();
                btfs_chunker::proof::prove(&shard, leaf_index, &mut |cid: &Cid| store.get_local(cid).ok().flatten())
            })
            .await
            .map_err(|e| Self::refuse(RefuseCode::Busy, e.to_string()))?
            .map_err(|e| Self::refuse(RefuseCode::NotHeld, e.to_string()))?;
        Ok(Response::Proof { path: proof.path, leaf: proof.leaf })
    }

    pub(super) async fn host_pay(
        self: &Arc<Self>,
        peer: PeerId,
        contract_id: B256,
        cheque: SignedCheque,
    ) -> Result<Response, Refusal> {
        let _ledger = self.ledger.lock().await;
        let mut record = self.host_contract(peer, contract_id).await?;
        let terms = &record.contract.contract;
        let vault = terms.vault;
        // Per vault and issuer: under the `none` backend every renter's vault is the zero address.
        let key = format!("recv/{vault:#x}/{:#x}", terms.renter);
        let lookup = key.clone();
        let previous: Option<ReceivedCheques> = self
            .blocking(move |m| records::get(m.store(), Records::Market, &lookup))
            .await
            .map_err(|e| Self::refuse(RefuseCode::Busy, e.to_string()))?
            .map_err(|e| Self::refuse(RefuseCode::Busy, e.to_string()))?;
        let last = previous.as_ref().map_or(U256::ZERO, |p| p.last.cheque.cumulative_payout);
        // The contract's renter must be the vault's issuer (checked on chain when proposing, under `evm`).
        let check = ChequeCheck { issuer: terms.renter, vault, beneficiary: self.address, chain_id: terms.chain_id };
        let delta = check.verify(&cheque, last).map_err(|e| Self::refuse(RefuseCode::Cheque, e.to_string()))?;
        if let SettlementChoice::Evm { .. } = self.config().settlement {
            // The vault must cover everything not yet cashed, this cheque included.
            let cashed = previous.as_ref().and_then(|p| p.cashed.parse::<U256>().ok()).unwrap_or(U256::ZERO);
            let settlement = self.settlement().await;
            let paid_out = match &settlement {
                Ok(s) => s.paid_out(vault, self.address).await.ok().flatten().unwrap_or(cashed),
                Err(_) => cashed,
            };
            let balance = match &settlement {
                Ok(s) => s.vault_balance(vault).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match balance {
                Ok(Some(balance)) => {
                    check
                        .check_funds(&cheque, paid_out, balance)
                        .map_err(|e| Self::refuse(RefuseCode::Cheque, e.to_string()))?;
                }
                Ok(None) => {}
                Err(e) => {
                    // The chain is down: the cheque is still valid, and it is checked again when cashed.
                    tracing::warn!(error = %e, "cannot check the vault balance; accepting the signed cheque");
                }
            }
        }
        let received = ReceivedCheques {
            vault: format!("{vault:#x}"),
            issuer: format!("{:#x}", terms.renter),
            last: cheque.clone(),
            cashed: previous.as_ref().map_or_else(|| "0".into(), |p| p.cashed.clone()),
            last_cash_error: None,
        };
        let paid = record.paid.parse::<U256>().unwrap_or(U256::ZERO) + delta;
        record.paid = paid.to_string();
        if !record.upfront_paid && paid >= terms.upfront {
            record.upfront_paid = true;
        }
        let saved = record.clone();
        self.blocking(move |m| {
            records::Batch::default().contract(&saved).put(Records::Market, key, &received).write(m.store())
        })
        .await
        .and_then(|r| r.map_err(Into::into))
        .map_err(|e| Self::refuse(RefuseCode::Busy, e.to_string()))?;
        tracing::info!(contract = %record.id, %delta, total = %cheque.cheque.cumulative_payout, "cheque accepted");
        Ok(Response::ChequeAccepted { cumulative: cheque.cheque.cumulative_payout })
    }

    pub(super) async fn host_release(self: &Arc<Self>, peer: PeerId, contract_id: B256) -> Result<Response, Refusal> {
        let _ledger = self.ledger.lock().await;
        let record = self.host_contract(peer, contract_id).await?;
        self.end_host_contract(record, ContractState::Released, "released by the renter")
            .await
            .map_err(|e| Self::refuse(RefuseCode::Busy, e.to_string()))?;
        Ok(Response::Ack)
    }

    /// Ends a host contract and unpins its shard unless another live contract holds the same shard. The
    /// caller holds the ledger lock.
    pub(super) async fn end_host_contract(
        self: &Arc<Self>,
        mut record: ContractRecord,
        state: ContractState,
        reason: &str,
    ) -> Result<(), super::MarketError> {
        record.state = state;
        record.reason = Some(reason.to_string());
        tracing::info!(contract = %record.id, ?state, reason, "host contract ended");
        self.blocking(move |m| -> Result<(), super::MarketError> {
            let others = m.contracts()?.into_iter().any(|r| {
                r.id != record.id && r.role == Role::Host && r.state.is_live() && r.shard_cid == record.shard_cid
            });
            records::Batch::default().contract(&record).write(m.store())?;
            if !others
                && let Ok(cid) = Cid::try_from(record.shard_cid.as_str())
                && let Err(e) = m.node.pin_rm(&cid)
            {
                tracing::debug!(error = %e, "shard was not pinned");
            }
            Ok(())
        })
        .await?
    }
}
