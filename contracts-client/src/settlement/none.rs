//! The `none` settlement backend: nothing on chain; reads are `None` ("unsettled"), writes are refused.

use alloy::primitives::{Address, U256};

use super::{Receipt, SettleError, SettleFuture, Settlement, SettlementKind};
use crate::cheque::SignedCheque;

/// Settles nothing. Cheques are still signed and verified by the market; the UI shows "unsettled".
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSettlement;

fn unsettled<T: Send + 'static>(op: &'static str) -> SettleFuture<'static, T> {
    Box::pin(async move { Err(SettleError::Unsettled { op }) })
}

fn none<T: Send + 'static>() -> SettleFuture<'static, Option<T>> {
    Box::pin(async { Ok(None) })
}

impl Settlement for NoSettlement {
    fn kind(&self) -> SettlementKind {
        SettlementKind::None
    }
    fn vault_balance(&self, _vault: Address) -> SettleFuture<'_, Option<U256>> {
        none()
    }
    fn issuer(&self, _vault: Address) -> SettleFuture<'_, Option<Address>> {
        none()
    }
    fn paid_out(&self, _vault: Address, _beneficiary: Address) -> SettleFuture<'_, Option<U256>> {
        none()
    }
    fn deposit(&self, _vault: Address, _amount: U256) -> SettleFuture<'_, Receipt> {
        unsettled("deposit")
    }
    fn withdraw(&self, _vault: Address, _amount: U256) -> SettleFuture<'_, Receipt> {
        unsettled("withdraw")
    }
    fn cash<'a>(&'a self, _cheque: &'a SignedCheque) -> SettleFuture<'a, Receipt> {
        unsettled("cash")
    }
    fn token_balance(&self, _who: Address) -> SettleFuture<'_, Option<U256>> {
        none()
    }
}
