//! The compiled Solidity contracts, committed under `artifacts/` by `solidity/compile.mjs` so that building
//! this crate needs no Node; `tests/artifacts.rs` fails when they are stale.

/// `artifacts/Vault.json`: `{contractName, compiler, abi, bytecode}`.
pub const VAULT_JSON: &str = include_str!("../artifacts/Vault.json");
/// `artifacts/TestToken.json`: `{contractName, compiler, abi, bytecode}`.
pub const TEST_TOKEN_JSON: &str = include_str!("../artifacts/TestToken.json");

alloy::sol! {
    /// The renter's vault (`solidity/Vault.sol`).
    #[sol(rpc)]
    Vault,
    "artifacts/Vault.json"
}

alloy::sol! {
    /// A mintable ERC20 for tests (`solidity/TestToken.sol`).
    #[sol(rpc)]
    TestToken,
    "artifacts/TestToken.json"
}
