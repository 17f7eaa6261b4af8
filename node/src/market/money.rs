//! `btfs vault ...` and `btfs cheque ...`: this node's vault (as a renter) and the cheques it sent and
//! received. Under the `none` backend every figure that would come from a chain says "unsettled"; nothing
//! here invents a token balance.

use std::sync::Arc;

use btfs_contracts_client::U256;
use serde_json::{Value, json};

use super::records::{self, ReceivedCheques, SentCheques};
use super::{Market, MarketError, SettlementChoice};
use crate::repo::store::Records;

fn amount(v: Option<U256>) -> Value {
    v.map_or_else(|| Value::String("unsettled".into()), |a| Value::String(a.to_string()))
}

impl Market {
    fn vault(&self) -> Result<btfs_contracts_client::Address, MarketError> {
        match self.config().settlement {
            SettlementChoice::Evm { vault: Some(v), .. } => Ok(v),
            SettlementChoice::Evm { vault: None, .. } => {
                Err(MarketError::Invalid("no vault yet: run `btfs vault deploy` or set Settlement.Vault".into()))
            }
            SettlementChoice::None => {
                Err(MarketError::Invalid("Settlement.Backend is none: cheques are not settled".into()))
            }
        }
    }

    /// `vault balance`: the vault's token balance, what it has paid out, and this node's own token balance.
    pub async fn vault_balance(self: &Arc<Self>) -> Result<Value, MarketError> {
        let settle = |e: btfs_contracts_client::settlement::SettleError| MarketError::Settlement(e.to_string());
        match self.config().settlement {
            SettlementChoice::None => Ok(json!({
                "Backend": "none",
                "Address": format!("{:#x}", self.address),
                "Vault": Value::Null,
                "Balance": "unsettled",
                "TokenBalance": "unsettled",
            })),
            SettlementChoice::Evm { vault, .. } => {
                let s = self.settlement().await?;
                let own = s.token_balance(self.address).await.map_err(settle)?;
                let (balance, issuer) = match vault {
                    Some(v) => (s.vault_balance(v).await.map_err(settle)?, s.issuer(v).await.map_err(settle)?),
                    None => (None, None),
                };
                Ok(json!({
                    "Backend": "evm",
                    "Address": format!("{:#x}", self.address),
                    "Vault": vault.map(|v| format!("{v:#x}")),
                    "Balance": amount(balance),
                    "Issuer": issuer.map(|a| format!("{a:#x}")),
                    "TokenBalance": amount(own),
                }))
            }
        }
    }

    /// `vault deploy`: deploys a vault owned by this node's key and records it in `Settlement.Vault`.
    pub async fn vault_deploy(self: &Arc<Self>) -> Result<Value, MarketError> {
        let SettlementChoice::Evm { token, .. } = self.config().settlement else {
            return Err(MarketError::Invalid("Settlement.Backend is none: there is no chain to deploy to".into()));
        };
        let evm = self.evm().await?.ok_or_else(|| MarketError::Invalid("no chain configured".into()))?;
        let vault = evm.deploy_vault(token).await.map_err(|e| MarketError::Settlement(e.to_string()))?;
        let text = format!("{vault:#x}");
        let value = Value::String(text.clone());
        self.blocking(move |m| m.node.config_set("Settlement.Vault", value))
            .await?
            .map_err(|e| MarketError::Failed(e.to_string()))?;
        Ok(json!({ "Vault": text }))
    }

    /// `vault deposit <amount>`.
    pub async fn vault_deposit(self: &Arc<Self>, value: U256) -> Result<Value, MarketError> {
        let vault = self.vault()?;
        let receipt =
            self.settlement().await?.deposit(vault, value).await.map_err(|e| MarketError::Settlement(e.to_string()))?;
        Ok(json!({ "Vault": format!("{vault:#x}"), "Deposited": value.to_string(), "Tx": format!("{receipt:?}") }))
    }

    /// `vault withdraw <amount>`.
    pub async fn vault_withdraw(self: &Arc<Self>, value: U256) -> Result<Value, MarketError> {
        let vault = self.vault()?;
        let receipt = self
            .settlement()
            .await?
            .withdraw(vault, value)
            .await
            .map_err(|e| MarketError::Settlement(e.to_string()))?;
        Ok(json!({ "Vault": format!("{vault:#x}"), "Withdrawn": value.to_string(), "Tx": format!("{receipt:?}") }))
    }

    /// `cheque list`: the cumulative cheques sent to each host and received from each vault.
    pub async fn cheques(self: &Arc<Self>) -> Result<Value, MarketError> {
        let (sent, received) = self
            .blocking(|m| -> Result<_, MarketError> {
                Ok((
                    records::scan::<SentCheques>(m.store(), Records::Market, "sent/")?,
                    records::scan::<ReceivedCheques>(m.store(), Records::Market, "recv/")?,
                ))
            })
            .await??;
        let unsettled = matches!(self.config().settlement, SettlementChoice::None);
        Ok(json!({
            "Settlement": if unsettled { "unsettled" } else { "evm" },
            "Sent": sent.iter().map(|s| json!({
                "Beneficiary": s.beneficiary,
                "Peer": s.peer,
                "Vault": format!("{:#x}", s.last.cheque.vault),
                "Cumulative": s.last.cheque.cumulative_payout.to_string(),
                "Delivered": s.delivered,
            })).collect::<Vec<_>>(),
            "Received": received.iter().map(|r| json!({
                "Vault": r.vault,
                "Issuer": r.issuer,
                "Cumulative": r.last.cheque.cumulative_payout.to_string(),
                "Cashed": if unsettled { "unsettled".to_string() } else { r.cashed.clone() },
                "LastCashError": r.last_cash_error,
            })).collect::<Vec<_>>(),
        }))
    }

    /// `cheque cash [vault]`: cashes the latest cheque from one vault, or from every vault with uncashed value.
    pub async fn cheque_cash(self: &Arc<Self>, vault: Option<String>) -> Result<Value, MarketError> {
        if matches!(self.config().settlement, SettlementChoice::None) {
            return Err(MarketError::Invalid("Settlement.Backend is none: cheques are not cashed".into()));
        }
        let received =
            self.blocking(|m| records::scan::<ReceivedCheques>(m.store(), Records::Market, "recv/")).await??;
        let wanted = vault.map(|v| v.to_lowercase());
        let mut out = Vec::new();
        for r in received {
            if wanted.as_deref().is_some_and(|w| w != r.vault) {
                continue;
            }
            let cashed = r.cashed.parse::<U256>().unwrap_or(U256::ZERO);
            if r.last.cheque.cumulative_payout <= cashed {
                continue;
            }
            out.push(self.cash(r).await?);
        }
        Ok(Value::Array(out))
    }
}
