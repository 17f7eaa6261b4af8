//! The storage-market commands: `storage ...`, `vault ...`, `cheque ...`. They run in the daemon (the market
//! needs the network), so they always go through its API; answers are printed as JSON, except `storage
//! upload`, which prints the session id (and, with `--wait`, progress on stderr until the upload settles).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::{online_client, values};
use crate::client::Client;

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Host mode: offer storage for rent (changes `Storage.Host.*`, then announces in the DHT).
    Announce {
        /// Turn host mode on or off.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        enable: Option<bool>,
        /// Asking price per GiB per day, in the token's base unit.
        #[arg(long)]
        price: Option<String>,
        /// Total size of shards to accept (`100GB`).
        #[arg(long)]
        max_storage: Option<String>,
        /// Largest single shard to accept.
        #[arg(long)]
        max_shard_size: Option<String>,
        /// Shortest contract accepted (`1h`, `30d`).
        #[arg(long)]
        min_duration: Option<String>,
        /// Longest contract accepted.
        #[arg(long)]
        max_duration: Option<String>,
    },
    /// Hosts found in the DHT, with their quotes.
    Hosts {
        #[arg(long, default_value = "1MiB")]
        shard_size: String,
        #[arg(long, default_value = "30d")]
        storage_length: String,
    },
    /// Erasure-code a file and rent hosts to keep its shards; `upload status <id>` follows it.
    Upload(UploadArgs),
    /// Contracts this node is party to.
    #[command(subcommand)]
    Contracts(ContractsCommand),
    /// Rebuild a file from any k of its shards.
    Download {
        /// The file's CID (of an upload made by this node) or the upload's manifest CID.
        cid: String,
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct UploadArgs {
    #[command(subcommand)]
    pub status: Option<UploadStatus>,
    /// The file's CID.
    pub cid: Option<String>,
    /// Data shards (k): any k shards rebuild the file.
    #[arg(long)]
    pub data_shards: Option<u64>,
    /// Parity shards (m): the file survives losing any m.
    #[arg(long)]
    pub parity_shards: Option<u64>,
    /// Bytes per piece (one leaf of a shard, one challenge).
    #[arg(long)]
    pub piece_size: Option<String>,
    /// How long the hosts keep the shards (`30d`).
    #[arg(long)]
    pub storage_length: Option<String>,
    /// The most to pay per GiB per day.
    #[arg(long)]
    pub price: Option<String>,
    /// Place on these hosts (peer ids or /p2p/ multiaddrs, comma-separated) instead of DHT discovery.
    #[arg(long)]
    pub hosts: Option<String>,
    /// Wait until every shard is held (or the upload fails), printing progress on stderr.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum UploadStatus {
    /// The state of an upload (JSON).
    Status { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ContractsCommand {
    /// List contracts (JSON).
    List,
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// The vault's balance, what it paid out, and this node's token balance.
    Balance,
    /// Deploy a vault owned by this node's key (evm backend) and record it in the config.
    Deploy,
    /// Move tokens from this node's account into its vault.
    Deposit { amount: String },
    /// Take tokens out of the vault.
    Withdraw { amount: String },
}

#[derive(Debug, Subcommand)]
pub enum ChequeCommand {
    /// Cheques sent and received.
    List,
    /// Cash received cheques on chain (all vaults, or one).
    Cash { vault: Option<String> },
}

fn one(client: &Client, cmd: &str, query: &[(&str, &str)]) -> Result<Value> {
    Ok(values(client, cmd, query)?.pop().unwrap_or_default())
}

fn print(out: &mut dyn Write, v: &Value) -> Result<()> {
    writeln!(out, "{}", serde_json::to_string_pretty(v)?)?;
    Ok(())
}

pub(super) fn storage(repo: &Path, cmd: StorageCommand, out: &mut dyn Write) -> Result<()> {
    let client = online_client(repo)?;
    match cmd {
        StorageCommand::Announce { enable, price, max_storage, max_shard_size, min_duration, max_duration } => {
            let enable = enable.map(|b| b.to_string());
            let mut q: Vec<(&str, &str)> = Vec::new();
            for (k, v) in [
                ("enable", &enable),
                ("price", &price),
                ("max-storage", &max_storage),
                ("max-shard-size", &max_shard_size),
                ("min-duration", &min_duration),
                ("max-duration", &max_duration),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            print(out, &one(&client, "storage/announce", &q)?)
        }
        StorageCommand::Hosts { shard_size, storage_length } => print(
            out,
            &one(&client, "storage/hosts", &[("shard-size", &shard_size), ("storage-length", &storage_length)])?,
        ),
        StorageCommand::Upload(args) => upload(&client, args, out),
        StorageCommand::Contracts(ContractsCommand::List) => print(out, &one(&client, "storage/contracts/list", &[])?),
        StorageCommand::Download { cid, output } => {
            let output = if output.is_absolute() { output } else { std::env::current_dir()?.join(output) };
            let path = output.to_string_lossy().into_owned();
            let report = one(&client, "storage/download", &[("arg", &cid), ("o", &path)])?;
            eprintln!(
                "rebuilt {} from shards {}",
                output.display(),
                report["shards_used"].as_array().map(|a| a.len()).unwrap_or(0)
            );
            print(out, &report)
        }
    }
}

fn upload(client: &Client, args: UploadArgs, out: &mut dyn Write) -> Result<()> {
    if let Some(UploadStatus::Status { id }) = args.status {
        return print(out, &one(client, "storage/upload/status", &[("arg", &id)])?);
    }
    let Some(cid) = args.cid else { bail!("storage upload needs a CID (or `status <id>`)") };
    let numbers = [args.data_shards.map(|n| n.to_string()), args.parity_shards.map(|n| n.to_string())];
    let mut q: Vec<(&str, &str)> = vec![("arg", &cid)];
    for (k, v) in [
        ("data-shards", &numbers[0]),
        ("parity-shards", &numbers[1]),
        ("piece-size", &args.piece_size),
        ("storage-length", &args.storage_length),
        ("price", &args.price),
        ("hosts", &args.hosts),
    ] {
        if let Some(v) = v {
            q.push((k, v));
        }
    }
    let started = one(client, "storage/upload", &q)?;
    let id = started["ID"].as_str().unwrap_or_default().to_string();
    writeln!(out, "{id}")?;
    out.flush()?;
    if !args.wait {
        return Ok(());
    }
    let mut last = String::new();
    loop {
        let status = one(client, "storage/upload/status", &[("arg", &id)])?;
        let state = status["State"].as_str().unwrap_or("").to_string();
        let shards = status["Shards"].as_array().cloned().unwrap_or_default();
        let stored = shards.iter().filter(|s| s["State"] == "stored").count();
        let line = format!("{state}: {stored}/{} shards held", shards.len());
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        match state.as_str() {
            "active" => return Ok(()),
            "failed" => bail!("upload {id} failed: {}", status["Error"].as_str().unwrap_or("unknown reason")),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

pub(super) fn vault(repo: &Path, cmd: VaultCommand, out: &mut dyn Write) -> Result<()> {
    let client = online_client(repo)?;
    let v = match cmd {
        VaultCommand::Balance => one(&client, "vault/balance", &[])?,
        VaultCommand::Deploy => one(&client, "vault/deploy", &[])?,
        VaultCommand::Deposit { amount } => one(&client, "vault/deposit", &[("arg", &amount)])?,
        VaultCommand::Withdraw { amount } => one(&client, "vault/withdraw", &[("arg", &amount)])?,
    };
    print(out, &v)
}

pub(super) fn cheque(repo: &Path, cmd: ChequeCommand, out: &mut dyn Write) -> Result<()> {
    let client = online_client(repo)?;
    let v = match cmd {
        ChequeCommand::List => one(&client, "cheque/list", &[])?,
        ChequeCommand::Cash { vault } => {
            let q: Vec<(&str, &str)> = vault.iter().map(|v| ("arg", v.as_str())).collect();
            one(&client, "cheque/cash", &q)?
        }
    };
    print(out, &v)
}
