//! The `evm` settlement backend: the node's key as an alloy wallet over an HTTP JSON-RPC endpoint, calling the
//! committed `Vault` and an ERC20 token (`TestToken`'s ABI is a plain ERC20's).
//!
//! Every transaction is sent, then waited for until mined; a revert found while estimating gas (before anything
//! is sent) is reported with its reason, as is a mined transaction with a failed status.

use std::sync::Arc;
use std::time::Duration;

use alloy::contract::Error as ContractError;
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, PendingTransactionBuilder, Provider, ProviderBuilder};
use alloy::transports::RpcError;
use alloy::transports::http::reqwest;

use super::{Receipt, SettleError, SettleFuture, Settlement, SettlementKind};
use crate::artifacts::{TestToken, Vault};
use crate::cheque::SignedCheque;
use crate::key::NodeKey;

/// Per-request timeout on the JSON-RPC endpoint: a hung endpoint is an error, not a stuck market.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a sent transaction may take to be mined, and how often its receipt is asked for meanwhile.
const MINE_TIMEOUT: Duration = Duration::from_secs(120);
const MINE_POLL: Duration = Duration::from_millis(200);

/// Where and what to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmConfig {
    /// JSON-RPC over HTTP(S), e.g. `http://127.0.0.1:8545`.
    pub rpc_url: String,
    /// The chain the endpoint must be on (BTTC mainnet 199, anvil 31337).
    pub chain_id: u64,
    /// The ERC20 token contracts are priced in.
    pub token: Address,
    /// This node's own vault, once it has one.
    pub vault: Option<Address>,
}

/// Settles on an EVM chain with the node's key.
#[derive(Clone)]
pub struct EvmSettlement {
    provider: DynProvider,
    config: EvmConfig,
    address: Address,
    /// Held from filling a transaction until it is mined.
    send_lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for EvmSettlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmSettlement").field("config", &self.config).field("address", &self.address).finish()
    }
}

impl EvmSettlement {
    /// Connects to `config.rpc_url` with `key` as the wallet and checks the endpoint's chain id.
    pub async fn connect(config: EvmConfig, key: NodeKey) -> Result<Self, SettleError> {
        let url = config
            .rpc_url
            .parse::<reqwest::Url>()
            .map_err(|e| SettleError::BadUrl { url: config.rpc_url.clone(), reason: e.to_string() })?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| SettleError::BadUrl { url: config.rpc_url.clone(), reason: e.to_string() })?;
        let wallet = EthereumWallet::from(key.signer().clone());
        // The nonce is read from the endpoint (pending count) for every transaction, not cached: a cached nonce is
        // consumed even when gas estimation then fails (a revert), leaving a gap that stalls every later
        // transaction. Sends are serialised by `send_lock` so two never read the same pending count.
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(wallet)
            .connect_reqwest(client, url)
            .erased();
        let got = provider
            .get_chain_id()
            .await
            .map_err(|e| SettleError::Unreachable { url: config.rpc_url.clone(), reason: e.to_string() })?;
        if got != config.chain_id {
            return Err(SettleError::WrongChain { url: config.rpc_url.clone(), expected: config.chain_id, got });
        }
        Ok(Self { provider, config, address: key.address(), send_lock: Arc::new(tokio::sync::Mutex::new(())) })
    }

    /// This node's address (the wallet's).
    pub fn address(&self) -> Address {
        self.address
    }

    pub fn config(&self) -> &EvmConfig {
        &self.config
    }

    /// Deploys a vault of `token` with this node as issuer.
    pub async fn deploy_vault(&self, token: Address) -> Result<Address, SettleError> {
        let call = Vault::deploy_builder(self.provider.clone(), self.address, token);
        let _sending = self.send_lock.lock().await;
        let pending = call.send().await.map_err(|e| self.call_error("deploy vault", Address::ZERO, e))?;
        let receipt = self.mined("deploy vault", Address::ZERO, pending).await?;
        receipt.contract_address.ok_or(SettleError::Rpc {
            op: "deploy vault",
            target: Address::ZERO,
            reason: format!("transaction {} created no contract", receipt.transaction_hash),
        })
    }

    /// Deploys a mintable test ERC20 holding `initial_supply` for this node. Tests only.
    pub async fn deploy_test_token(&self, initial_supply: U256) -> Result<Address, SettleError> {
        let call = TestToken::deploy_builder(self.provider.clone(), initial_supply);
        let _sending = self.send_lock.lock().await;
        let pending = call.send().await.map_err(|e| self.call_error("deploy test token", Address::ZERO, e))?;
        let receipt = self.mined("deploy test token", Address::ZERO, pending).await?;
        receipt.contract_address.ok_or(SettleError::Rpc {
            op: "deploy test token",
            target: Address::ZERO,
            reason: format!("transaction {} created no contract", receipt.transaction_hash),
        })
    }

    /// Mints test tokens (the configured token must be a `TestToken`). Tests only.
    pub async fn mint(&self, to: Address, amount: U256) -> Result<Receipt, SettleError> {
        let token = self.config.token;
        let instance = TestToken::new(token, self.provider.clone());
        let call = instance.mint(to, amount);
        let _sending = self.send_lock.lock().await;
        let pending = call.send().await.map_err(|e| self.call_error("mint", token, e))?;
        let receipt = self.mined("mint", token, pending).await?;
        Ok(Receipt { tx_hash: receipt.transaction_hash, amount })
    }

    /// Transfers this node's tokens.
    pub async fn transfer(&self, to: Address, amount: U256) -> Result<Receipt, SettleError> {
        let token = self.config.token;
        let instance = TestToken::new(token, self.provider.clone());
        let call = instance.transfer(to, amount);
        let _sending = self.send_lock.lock().await;
        let pending = call.send().await.map_err(|e| self.call_error("transfer", token, e))?;
        let receipt = self.mined("transfer", token, pending).await?;
        Ok(Receipt { tx_hash: receipt.transaction_hash, amount })
    }

    /// The vault's own digest for a cheque to `beneficiary` (a cross-check of the Rust EIP-712 encoding).
    pub async fn vault_cheque_digest(
        &self,
        vault: Address,
        beneficiary: Address,
        cumulative_payout: U256,
    ) -> Result<B256, SettleError> {
        Vault::new(vault, self.provider.clone())
            .chequeDigest(beneficiary, cumulative_payout)
            .call()
            .await
            .map_err(|e| self.call_error("cheque digest", vault, e))
    }

    async fn mined(
        &self,
        op: &'static str,
        target: Address,
        pending: PendingTransactionBuilder<alloy::network::Ethereum>,
    ) -> Result<alloy::rpc::types::TransactionReceipt, SettleError> {
        // Polls for the receipt ourselves rather than through alloy's block heartbeat, which can miss a
        // transaction mined before it started watching (anvil mines instantly) and then waits forever.
        let tx_hash = *pending.tx_hash();
        let deadline = tokio::time::Instant::now() + MINE_TIMEOUT;
        let receipt = loop {
            match self.provider.get_transaction_receipt(tx_hash).await {
                Ok(Some(receipt)) => break receipt,
                Ok(None) => {}
                Err(e) => {
                    return Err(SettleError::Rpc {
                        op,
                        target,
                        reason: format!("waiting for transaction {tx_hash}: {e}"),
                    });
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SettleError::Rpc {
                    op,
                    target,
                    reason: format!("transaction {tx_hash} not mined within {} s", MINE_TIMEOUT.as_secs()),
                });
            }
            tokio::time::sleep(MINE_POLL).await;
        };
        if !receipt.status() {
            return Err(SettleError::Failed { op, target, tx_hash });
        }
        Ok(receipt)
    }

    fn call_error(&self, op: &'static str, target: Address, e: ContractError) -> SettleError {
        if let Some(data) = e.as_revert_data() {
            let reason = alloy::sol_types::decode_revert_reason(&data).unwrap_or_else(|| format!("data {data}"));
            return SettleError::Reverted { op, target, reason };
        }
        match e {
            ContractError::TransportError(RpcError::Transport(t)) => {
                SettleError::Unreachable { url: self.config.rpc_url.clone(), reason: t.to_string() }
            }
            ContractError::TransportError(RpcError::ErrorResp(payload)) if payload.message.contains("revert") => {
                SettleError::Reverted { op, target, reason: payload.message.to_string() }
            }
            other => SettleError::Rpc { op, target, reason: other.to_string() },
        }
    }

    async fn token_of(&self, vault: Address) -> Result<Address, SettleError> {
        Vault::new(vault, self.provider.clone())
            .token()
            .call()
            .await
            .map_err(|e| self.call_error("read token", vault, e))
    }
}

impl Settlement for EvmSettlement {
    fn kind(&self) -> SettlementKind {
        SettlementKind::Evm
    }

    fn vault_balance(&self, vault: Address) -> SettleFuture<'_, Option<U256>> {
        Box::pin(async move {
            let balance = Vault::new(vault, self.provider.clone())
                .balance()
                .call()
                .await
                .map_err(|e| self.call_error("read balance", vault, e))?;
            Ok(Some(balance))
        })
    }

    fn issuer(&self, vault: Address) -> SettleFuture<'_, Option<Address>> {
        Box::pin(async move {
            let issuer = Vault::new(vault, self.provider.clone())
                .issuer()
                .call()
                .await
                .map_err(|e| self.call_error("read issuer", vault, e))?;
            Ok(Some(issuer))
        })
    }

    fn paid_out(&self, vault: Address, beneficiary: Address) -> SettleFuture<'_, Option<U256>> {
        Box::pin(async move {
            let paid = Vault::new(vault, self.provider.clone())
                .paidOut(beneficiary)
                .call()
                .await
                .map_err(|e| self.call_error("read paid out", vault, e))?;
            Ok(Some(paid))
        })
    }

    fn deposit(&self, vault: Address, amount: U256) -> SettleFuture<'_, Receipt> {
        Box::pin(async move {
            let token = self.token_of(vault).await?;
            let instance = TestToken::new(token, self.provider.clone());
            let approve = instance.approve(vault, amount);
            let _sending = self.send_lock.lock().await;
            let pending = approve.send().await.map_err(|e| self.call_error("approve", token, e))?;
            self.mined("approve", token, pending).await?;
            let instance = Vault::new(vault, self.provider.clone());
            let deposit = instance.deposit(amount);
            let pending = deposit.send().await.map_err(|e| self.call_error("deposit", vault, e))?;
            let receipt = self.mined("deposit", vault, pending).await?;
            Ok(Receipt { tx_hash: receipt.transaction_hash, amount })
        })
    }

    fn withdraw(&self, vault: Address, amount: U256) -> SettleFuture<'_, Receipt> {
        Box::pin(async move {
            let instance = Vault::new(vault, self.provider.clone());
            let call = instance.withdraw(amount);
            let _sending = self.send_lock.lock().await;
            let pending = call.send().await.map_err(|e| self.call_error("withdraw", vault, e))?;
            let receipt = self.mined("withdraw", vault, pending).await?;
            Ok(Receipt { tx_hash: receipt.transaction_hash, amount })
        })
    }

    fn cash<'a>(&'a self, cheque: &'a SignedCheque) -> SettleFuture<'a, Receipt> {
        Box::pin(async move {
            let c = &cheque.cheque;
            let vault = c.vault;
            if c.chain_id != self.config.chain_id {
                return Err(SettleError::ChequeChain { vault, expected: self.config.chain_id, got: c.chain_id });
            }
            if c.beneficiary != self.address {
                return Err(SettleError::NotBeneficiary { vault, beneficiary: c.beneficiary, me: self.address });
            }
            let instance = Vault::new(vault, self.provider.clone());
            let call =
                instance.cashChequeBeneficiary(self.address, c.cumulative_payout, cheque.issuer_sig.clone().into());
            let _sending = self.send_lock.lock().await;
            let pending = call.send().await.map_err(|e| self.call_error("cash cheque", vault, e))?;
            let receipt = self.mined("cash cheque", vault, pending).await?;
            let tx_hash = receipt.transaction_hash;
            let amount = receipt
                .inner
                .logs()
                .iter()
                .filter(|log| log.address() == vault)
                .find_map(|log| log.log_decode::<Vault::ChequeCashed>().ok())
                .map(|log| log.inner.data.amount)
                .ok_or(SettleError::MissingEvent {
                    op: "cash cheque",
                    target: vault,
                    event: "ChequeCashed",
                    tx_hash,
                })?;
            Ok(Receipt { tx_hash, amount })
        })
    }

    fn token_balance(&self, who: Address) -> SettleFuture<'_, Option<U256>> {
        Box::pin(async move {
            let token = self.config.token;
            let balance = TestToken::new(token, self.provider.clone())
                .balanceOf(who)
                .call()
                .await
                .map_err(|e| self.call_error("read token balance", token, e))?;
            Ok(Some(balance))
        })
    }
}
