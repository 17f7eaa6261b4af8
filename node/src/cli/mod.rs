//! The `btfs` command line: argument parsing (clap) and output formatting, kubo-compatible. Every command is
//! a call on a `Backend`: the local `Node`, or a running daemon's RPC API when `$BTFS_PATH/api` names one
//! that answers (kubo's rule). This module only turns arguments into calls and results into text, the same
//! text in both modes.

mod backend;
mod bittorrent;
mod market;

use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use anyhow::{Context, Result, bail};
use btfs_chunker::Cid;
use btfs_chunker::import::{ChunkSize, Profile};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use self::backend::Backend;
use crate::add::{AddEvents, AddInput, AddOptions, Added};
use crate::api::{ConfigValueKind, Node, init_profile};
use crate::blocks::PinFilter;
use crate::client::Client;
use crate::read::EntryKind;

/// btfs: a content-addressed storage node in the style of BTFS, compatible with IPFS.
#[derive(Debug, Parser)]
#[command(name = "btfs", version, about, disable_help_subcommand = true)]
pub struct Cli {
    /// Output encoding for commands that support it: text or json.
    #[arg(long, global = true, default_value = "text")]
    pub enc: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Initialize a repo at $BTFS_PATH (default ~/.btfs).
    Init {
        /// Configuration profile: `test` binds everything to 127.0.0.1 port 0, with no bootstrap peers.
        #[arg(long)]
        profile: Option<String>,
    },
    /// Run the node: swarm, Bitswap, DHT and the RPC API, until interrupted or `btfs shutdown`.
    Daemon {
        /// Do not start the network; serve the API over the local repo only.
        #[arg(long)]
        offline: bool,
    },
    /// Serve the repo read-only over the HTTP gateway, without the network or the RPC API.
    Gateway {
        /// Listen address as a multiaddr (default: Addresses.Gateway).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Add files or directories to the store and print their CIDs.
    Add(AddArgs),
    /// Print the contents of a file.
    Cat {
        path: String,
        /// Byte offset to start at.
        #[arg(short = 'o', long, default_value_t = 0)]
        offset: u64,
        /// Maximum number of bytes to print.
        #[arg(short = 'l', long)]
        length: Option<u64>,
    },
    /// Write a file or directory tree to disk.
    Get {
        path: String,
        /// Output path (default: the CID or last path segment).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// List the links of a directory or file.
    Ls {
        #[arg(required = true)]
        paths: Vec<String>,
        /// Print a header line.
        #[arg(short = 'v', long)]
        headers: bool,
    },
    /// Pin objects to keep them from garbage collection.
    #[command(subcommand)]
    Pin(PinCommand),
    /// Work with raw blocks.
    #[command(subcommand)]
    Block(BlockCommand),
    /// Import and export DAGs as CAR files.
    #[command(subcommand)]
    Dag(DagCommand),
    /// Repo maintenance.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Show or change the config: `config <key>`, `config <key> <value>`, `config show`.
    Config {
        key: String,
        value: Option<String>,
        /// Parse the value as JSON.
        #[arg(long)]
        json: bool,
        /// Parse the value as a boolean.
        #[arg(long)]
        bool: bool,
    },
    /// Show this node's identity.
    Id,
    /// Show the version.
    Version {
        /// Only the version number.
        #[arg(short = 'n', long)]
        number: bool,
    },
    /// Stop the running daemon.
    Shutdown,
    /// Peers of the running daemon.
    #[command(subcommand)]
    Swarm(SwarmCommand),
    /// The DHT: providers and peers.
    #[command(subcommand)]
    Routing(RoutingCommand),
    /// The Bitswap exchange of the running daemon.
    #[command(subcommand)]
    Bitswap(BitswapCommand),
    /// The storage market: host mode, uploads to hosts, contracts, downloads from shards.
    #[command(subcommand)]
    Storage(market::StorageCommand),
    /// This node's vault, which pays its hosts' cheques.
    #[command(subcommand)]
    Vault(market::VaultCommand),
    /// Cheques sent and received.
    #[command(subcommand)]
    Cheque(market::ChequeCommand),
    /// BitTorrent: import torrents into the store, seed the store back to BitTorrent.
    #[command(subcommand)]
    Bittorrent(bittorrent::BitTorrentCommand),
}

#[derive(Debug, Subcommand)]
pub enum SwarmCommand {
    /// List connected peers.
    Peers,
    /// Connect to peers (`/ip4/.../tcp/.../p2p/<id>`).
    Connect {
        #[arg(required = true)]
        addrs: Vec<String>,
    },
    /// Close connections to peers (a multiaddr or a peer id).
    Disconnect {
        #[arg(required = true)]
        addrs: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoutingCommand {
    /// Find peers that provide a CID.
    Findprovs {
        cid: String,
        /// How many providers to look for.
        #[arg(short = 'n', long = "num-providers", default_value_t = 20)]
        num: u32,
    },
    /// Announce to the DHT that this node provides CIDs.
    Provide {
        #[arg(required = true)]
        cids: Vec<String>,
    },
    /// Find the addresses of a peer.
    Findpeer { peer: String },
}

#[derive(Debug, Subcommand)]
pub enum BitswapCommand {
    /// Counters and partners.
    Stat,
    /// The blocks this node wants (or a peer wants from it).
    Wantlist {
        #[arg(short = 'p', long)]
        peer: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Files or directories to add; none or `-` reads standard input.
    pub paths: Vec<String>,
    /// Add directories recursively.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Print only the CIDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Print only the root CID.
    #[arg(short = 'Q', long)]
    pub quieter: bool,
    /// Wrap the inputs in a directory.
    #[arg(short = 'w', long)]
    pub wrap_with_directory: bool,
    /// Include hidden files (names starting with a dot) when adding directories.
    #[arg(short = 'H', long)]
    pub hidden: bool,
    /// Only compute the CIDs; store nothing.
    #[arg(short = 'n', long)]
    pub only_hash: bool,
    /// Pin the added content (default true).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true")]
    pub pin: bool,
    /// CID version: 0 or 1 (1 implies --raw-leaves).
    #[arg(long)]
    pub cid_version: Option<u64>,
    /// Use raw blocks for leaves.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub raw_leaves: Option<bool>,
    /// Chunking algorithm: size-<bytes>.
    #[arg(short = 's', long)]
    pub chunker: Option<String>,
    /// Use the trickle DAG layout.
    #[arg(short = 't', long)]
    pub trickle: bool,
    /// Import profile: unixfs-v0-2015 (default) or unixfs-v1-2025.
    #[arg(long)]
    pub cid_profile: Option<String>,
    /// Hash function: sha2-256, sha2-512, blake3 or blake2b-256.
    #[arg(long)]
    pub hash: Option<String>,
    /// Inline small blocks into their CIDs (identity hash).
    #[arg(long)]
    pub inline: bool,
    /// Largest block to inline, in bytes.
    #[arg(long)]
    pub inline_limit: Option<usize>,
    /// Name to report for standard input.
    #[arg(long)]
    pub stdin_name: Option<String>,
    /// Show a progress bar (default: when stderr is a terminal).
    #[arg(short = 'p', long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub progress: Option<bool>,
}

#[derive(Debug, Subcommand)]
pub enum PinCommand {
    /// Pin objects (recursively by default).
    Add {
        #[arg(required = true)]
        paths: Vec<String>,
        #[arg(short = 'r', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true")]
        recursive: bool,
    },
    /// Remove pins.
    Rm {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// List pins.
    Ls {
        /// all, recursive, direct or indirect.
        #[arg(short = 't', long = "type", default_value = "all")]
        kind: String,
        #[arg(short = 'q', long)]
        quiet: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BlockCommand {
    /// Print a raw block.
    Get { cid: String },
    /// Store a raw block from a file or standard input.
    Put {
        file: Option<PathBuf>,
        /// Multicodec of the block: raw, dag-pb, dag-cbor.
        #[arg(long, default_value = "raw")]
        cid_codec: String,
        /// Hash function.
        #[arg(long, default_value = "sha2-256")]
        mhtype: String,
        /// Pin the block directly.
        #[arg(long)]
        pin: bool,
    },
    /// Print a block's CID and size.
    Stat { cid: String },
    /// Remove blocks.
    Rm {
        #[arg(required = true)]
        cids: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DagCommand {
    /// Import CAR files (`-` for standard input).
    Import {
        #[arg(required = true)]
        files: Vec<String>,
        /// Pin the CAR roots.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true")]
        pin_roots: bool,
    },
    /// Export a DAG as a CARv1 to standard output.
    Export { cid: String },
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Block count and size.
    Stat,
    /// Rehash every block and report corrupt ones.
    Verify,
    /// Remove unpinned blocks.
    Gc {
        #[arg(short = 'q', long)]
        quiet: bool,
    },
}

/// The repo path: $BTFS_PATH or ~/.btfs.
pub fn repo_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BTFS_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").context("neither BTFS_PATH nor HOME is set")?;
    Ok(PathBuf::from(home).join(".btfs"))
}

fn parse_cid(s: &str) -> Result<Cid> {
    let trimmed = s.strip_prefix("/ipfs/").or_else(|| s.strip_prefix("/btfs/")).unwrap_or(s);
    Cid::try_from(trimmed).with_context(|| format!("invalid CID {s:?}"))
}

/// Runs one command; the binary prints the error chain and exits non-zero on `Err`.
pub fn run(cli: Cli) -> Result<()> {
    let json = match cli.enc.as_str() {
        "json" => true,
        "text" => false,
        other => bail!("unknown encoding {other:?} (expected text or json)"),
    };
    let path = repo_path()?;
    if let Command::Daemon { offline } = cli.command {
        // Before stdout is locked below: the daemon prints from several threads.
        crate::daemon::run(&path, offline, |node, shutdown| {
            crate::rpc::router(crate::rpc::RpcContext { node, shutdown })
        })?;
        return Ok(());
    }
    if let Command::Gateway { listen } = &cli.command {
        crate::gateway::run_standalone(&path, listen.as_deref())?;
        return Ok(());
    }
    let mut stdout = io::BufWriter::new(io::stdout().lock());
    match cli.command {
        Command::Init { profile } => {
            let profile = init_profile(profile.as_deref()).map_err(anyhow::Error::msg)?;
            let node = Node::init(&path, profile)?;
            writeln!(stdout, "initialized btfs node at {}", path.display())?;
            writeln!(stdout, "peer identity: {}", node.id().id)?;
        }
        Command::Version { number } => {
            if number {
                writeln!(stdout, "{}", env!("CARGO_PKG_VERSION"))?;
            } else {
                writeln!(stdout, "btfs version {}", env!("CARGO_PKG_VERSION"))?;
            }
        }
        Command::Shutdown => match Client::discover(&path)? {
            Some(client) => client.shutdown()?,
            None => bail!("no daemon running"),
        },
        Command::Swarm(cmd) => swarm(&online_client(&path)?, cmd, &mut stdout)?,
        Command::Routing(cmd) => routing(&online_client(&path)?, cmd, &mut stdout)?,
        Command::Bitswap(cmd) => bitswap(&online_client(&path)?, cmd, &mut stdout, json)?,
        Command::Storage(cmd) => market::storage(&path, cmd, &mut stdout)?,
        Command::Vault(cmd) => market::vault(&path, cmd, &mut stdout)?,
        Command::Cheque(cmd) => market::cheque(&path, cmd, &mut stdout)?,
        Command::Bittorrent(cmd) => bittorrent::run(&path, cmd, &mut stdout, json)?,
        Command::Add(args) => add(&Backend::open(&path)?, args, &mut stdout, json)?,
        Command::Cat { path: p, offset, length } => {
            Backend::open(&path)?.cat(&p, offset, length, &mut stdout)?;
        }
        Command::Get { path: p, output } => {
            let backend = Backend::open(&path)?;
            let dest =
                output.unwrap_or_else(|| PathBuf::from(p.trim_end_matches('/').rsplit('/').next().unwrap_or(&p)));
            eprintln!("Saving file(s) to {}", dest.display());
            let bar = io::stderr().is_terminal().then(|| progress_bar(None));
            let on_total = |n| {
                if let Some(bar) = &bar {
                    bar.set_length(n);
                }
            };
            backend.get(&p, &dest, &on_total, &|n| {
                if let Some(bar) = &bar {
                    bar.inc(n);
                }
            })?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        }
        Command::Ls { paths, headers } => {
            let backend = Backend::open(&path)?;
            let many = paths.len() > 1;
            for (i, p) in paths.iter().enumerate() {
                let entries = backend.ls(p)?;
                if json {
                    let list: Vec<_> = entries
                        .iter()
                        .map(|e| serde_json::json!({"Name": e.name, "Hash": e.cid.to_string(), "Size": e.size, "Type": e.kind.unixfs_code()}))
                        .collect();
                    writeln!(stdout, "{}", serde_json::json!({"Objects": [{"Hash": p, "Links": list}]}))?;
                    continue;
                }
                if many {
                    if i > 0 {
                        writeln!(stdout)?;
                    }
                    writeln!(stdout, "{p}:")?;
                }
                // Columns aligned as kubo's tabwriter aligns them.
                let sizes: Vec<String> = entries
                    .iter()
                    .map(|e| if e.kind == EntryKind::Directory { "-".to_string() } else { e.size.to_string() })
                    .collect();
                let width = sizes.iter().map(String::len).max().unwrap_or(0).max(if headers { 4 } else { 0 });
                let cid_width = entries.iter().map(|e| e.cid.to_string().len()).max().unwrap_or(0).max(4);
                if headers {
                    writeln!(stdout, "{:cid_width$} {:width$} Name", "Hash", "Size")?;
                }
                for (e, size) in entries.iter().zip(&sizes) {
                    let slash = if e.kind == EntryKind::Directory { "/" } else { "" };
                    writeln!(stdout, "{:cid_width$} {size:width$} {}{slash}", e.cid.to_string(), e.name)?;
                }
            }
        }
        Command::Pin(cmd) => pin(&Backend::open(&path)?, cmd, &mut stdout, json)?,
        Command::Block(cmd) => block(&Backend::open(&path)?, cmd, &mut stdout)?,
        Command::Dag(cmd) => dag(&Backend::open(&path)?, cmd, &mut stdout)?,
        Command::Repo(cmd) => repo(&Backend::open(&path)?, cmd, &mut stdout, json)?,
        Command::Config { key, value, json: as_json, bool: as_bool } => {
            let backend = Backend::open(&path)?;
            match (key.as_str(), value) {
                ("show", None) => writeln!(stdout, "{}", serde_json::to_string_pretty(&backend.config_show()?)?)?,
                (_, None) => match backend.config_get(&key)? {
                    serde_json::Value::String(s) => writeln!(stdout, "{s}")?,
                    other => writeln!(stdout, "{}", serde_json::to_string_pretty(&other)?)?,
                },
                (_, Some(raw)) => {
                    let kind = match (as_json, as_bool) {
                        (true, _) => ConfigValueKind::Json,
                        (false, true) => ConfigValueKind::Bool,
                        (false, false) => ConfigValueKind::String,
                    };
                    backend.config_set(&key, &raw, kind)?;
                }
            }
        }
        Command::Daemon { .. } | Command::Gateway { .. } => unreachable!("handled above"),
        Command::Id => {
            let id = Backend::open(&path)?.id()?;
            writeln!(stdout, "{}", serde_json::to_string_pretty(&id)?)?;
        }
    }
    stdout.flush()?;
    Ok(())
}

/// The running daemon's API, for the commands that need the network.
fn online_client(repo: &Path) -> Result<Client> {
    Client::discover(repo)?
        .ok_or_else(|| anyhow::anyhow!("this command must be run in online mode. Try running 'btfs daemon' first"))
}

/// Every JSON value a command answers.
fn values(client: &Client, cmd: &str, query: &[(&str, &str)]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    client.command(cmd, query, &mut |v| out.push(v))?;
    Ok(out)
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v[key].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

fn swarm(client: &Client, cmd: SwarmCommand, out: &mut dyn Write) -> Result<()> {
    let (name, addrs) = match cmd {
        SwarmCommand::Peers => {
            for v in values(client, "swarm/peers", &[])? {
                for peer in v["Peers"].as_array().into_iter().flatten() {
                    let (addr, id) = (peer["Addr"].as_str().unwrap_or(""), peer["Peer"].as_str().unwrap_or(""));
                    writeln!(out, "{addr}/p2p/{id}")?;
                }
            }
            return Ok(());
        }
        SwarmCommand::Connect { addrs } => ("swarm/connect", addrs),
        SwarmCommand::Disconnect { addrs } => ("swarm/disconnect", addrs),
    };
    let query: Vec<(&str, &str)> = addrs.iter().map(|a| ("arg", a.as_str())).collect();
    for v in values(client, name, &query)? {
        for line in strings(&v, "Strings") {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

fn routing(client: &Client, cmd: RoutingCommand, out: &mut dyn Write) -> Result<()> {
    match cmd {
        RoutingCommand::Findprovs { cid, num } => {
            let num = num.to_string();
            client.command("routing/findprovs", &[("arg", &cid), ("num-providers", &num)], &mut |v| {
                for r in v["Responses"].as_array().into_iter().flatten() {
                    if let Some(id) = r["ID"].as_str() {
                        let _ = writeln!(out, "{id}");
                    }
                }
            })?;
        }
        RoutingCommand::Provide { cids } => {
            let query: Vec<(&str, &str)> = cids.iter().map(|c| ("arg", c.as_str())).collect();
            values(client, "routing/provide", &query)?;
        }
        RoutingCommand::Findpeer { peer } => {
            for v in values(client, "routing/findpeer", &[("arg", &peer)])? {
                for r in v["Responses"].as_array().into_iter().flatten() {
                    for addr in strings(r, "Addrs") {
                        writeln!(out, "{addr}")?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn bitswap(client: &Client, cmd: BitswapCommand, out: &mut dyn Write, json: bool) -> Result<()> {
    match cmd {
        BitswapCommand::Stat => {
            let v = values(client, "bitswap/stat", &[])?.pop().unwrap_or_default();
            if json {
                writeln!(out, "{v}")?;
                return Ok(());
            }
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            let len = |k: &str| v[k].as_array().map_or(0, Vec::len);
            writeln!(out, "bitswap status")?;
            writeln!(out, "\tprovides buffer: {} / 256", n("ProvideBufLen"))?;
            writeln!(out, "\tblocks received: {}", n("BlocksReceived"))?;
            writeln!(out, "\tblocks sent: {}", n("BlocksSent"))?;
            writeln!(out, "\tdata received: {}", n("DataReceived"))?;
            writeln!(out, "\tdata sent: {}", n("DataSent"))?;
            writeln!(out, "\tdup blocks received: {}", n("DupBlksReceived"))?;
            writeln!(out, "\tdup data received: {}", n("DupDataReceived"))?;
            writeln!(out, "\twantlist [{} keys]", len("Wantlist"))?;
            writeln!(out, "\tpartners [{}]", len("Peers"))?;
        }
        BitswapCommand::Wantlist { peer } => {
            let query: Vec<(&str, &str)> = peer.iter().map(|p| ("peer", p.as_str())).collect();
            for v in values(client, "bitswap/wantlist", &query)? {
                for key in v["Keys"].as_array().into_iter().flatten() {
                    writeln!(out, "{}", key["/"].as_str().unwrap_or(""))?;
                }
            }
        }
    }
    Ok(())
}

/// The byte-count progress bar `add` and `get` draw on stderr; without a known total it only counts.
fn progress_bar(total: Option<u64>) -> ProgressBar {
    let bar = total.map_or_else(ProgressBar::no_length, ProgressBar::new);
    bar.set_style(
        ProgressStyle::with_template("{bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

struct Printer<'a> {
    out: &'a mut dyn Write,
    quiet: bool,
    quieter: bool,
    json: bool,
    bar: Option<ProgressBar>,
    error: Option<io::Error>,
    /// The last entry reported: what `-Q` prints, as kubo does.
    last: Option<Cid>,
}

impl AddEvents for Printer<'_> {
    fn added(&mut self, entry: &Added) {
        self.last = Some(entry.cid);
        if self.quieter {
            return;
        }
        let line = if self.json {
            serde_json::json!({"Name": entry.name, "Hash": entry.cid.to_string(), "Size": entry.size.to_string()})
                .to_string()
        } else if self.quiet {
            entry.cid.to_string()
        } else {
            format!("added {} {}", entry.cid, entry.name)
        };
        let res = match &self.bar {
            Some(bar) => bar.suspend(|| writeln!(self.out, "{line}").and_then(|()| self.out.flush())),
            None => writeln!(self.out, "{line}"),
        };
        if let Err(e) = res {
            self.error.get_or_insert(e);
        }
    }

    fn progress(&mut self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }
}

fn add(node: &Backend, args: AddArgs, out: &mut dyn Write, json: bool) -> Result<()> {
    let mut import = btfs_chunker::import::Options {
        cid_version: args.cid_version,
        raw_leaves: args.raw_leaves,
        trickle: args.trickle,
        inline: args.inline,
        inline_limit: args.inline_limit,
        ..Default::default()
    };
    if let Some(p) = &args.cid_profile {
        import.profile = Some(p.parse::<Profile>()?);
    }
    if let Some(c) = &args.chunker {
        import.chunk_size = Some(c.parse::<ChunkSize>()?);
    }
    if let Some(h) = &args.hash {
        import.hash = Some(h.parse()?);
    }
    let opts = AddOptions {
        import,
        pin: args.pin,
        only_hash: args.only_hash,
        wrap: args.wrap_with_directory,
        recursive: args.recursive,
        hidden: args.hidden,
    };
    let mut total = 0u64;
    let mut inputs = Vec::new();
    let paths = if args.paths.is_empty() { vec!["-".to_string()] } else { args.paths };
    for p in paths {
        if p == "-" {
            let reader: Box<dyn Read + Send> = Box::new(io::stdin());
            inputs.push(AddInput::Stream { name: args.stdin_name.clone(), reader });
        } else {
            if let Ok(m) = std::fs::metadata(&p) {
                total += m.len();
            }
            inputs.push(AddInput::Path(PathBuf::from(p)));
        }
    }
    let show_bar = args.progress.unwrap_or_else(|| io::stderr().is_terminal()) && !args.quieter;
    let bar = show_bar.then(|| progress_bar(Some(total).filter(|&t| t > 0)));
    let mut printer = Printer { out, quiet: args.quiet, quieter: args.quieter, json, bar, error: None, last: None };
    let roots = node.add(inputs, &opts, &mut printer)?;
    if let Some(bar) = printer.bar.take() {
        bar.finish_and_clear();
    }
    if let Some(e) = printer.error.take() {
        return Err(e).context("cannot write output");
    }
    if args.quieter
        && let Some(last) = printer.last.or_else(|| roots.last().map(|r| r.cid))
    {
        writeln!(printer.out, "{last}")?;
    }
    Ok(())
}

fn pin(node: &Backend, cmd: PinCommand, out: &mut dyn Write, json: bool) -> Result<()> {
    match cmd {
        PinCommand::Add { paths, recursive } => {
            for p in paths {
                let cid = node.pin_add(&p, recursive)?;
                writeln!(out, "pinned {cid} {}", if recursive { "recursively" } else { "directly" })?;
            }
        }
        PinCommand::Rm { paths } => {
            for p in paths {
                let cid = node.pin_rm(&p)?;
                writeln!(out, "unpinned {cid}")?;
            }
        }
        PinCommand::Ls { kind, quiet } => {
            let filter = match kind.as_str() {
                "all" => PinFilter::All,
                "recursive" => PinFilter::Recursive,
                "direct" => PinFilter::Direct,
                "indirect" => PinFilter::Indirect,
                other => bail!("invalid pin type {other:?} (expected all, recursive, direct or indirect)"),
            };
            let pins = node.pin_ls(filter)?;
            if json {
                let keys: serde_json::Map<String, serde_json::Value> =
                    pins.iter().map(|(c, k)| (c.to_string(), serde_json::json!({"Type": k}))).collect();
                writeln!(out, "{}", serde_json::json!({"Keys": keys}))?;
            } else {
                for (cid, k) in pins {
                    if quiet {
                        writeln!(out, "{cid}")?;
                    } else {
                        writeln!(out, "{cid} {k}")?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn block(node: &Backend, cmd: BlockCommand, out: &mut dyn Write) -> Result<()> {
    match cmd {
        BlockCommand::Get { cid } => node.block_get(&parse_cid(&cid)?, out)?,
        BlockCommand::Put { file, cid_codec, mhtype, pin } => {
            let limit = crate::blocks::MAX_BLOCK_SIZE as u64 + 1;
            let mut data = Vec::new();
            match &file {
                Some(f) if f.as_os_str() != "-" => {
                    std::fs::File::open(f)
                        .with_context(|| format!("cannot open {}", f.display()))?
                        .take(limit)
                        .read_to_end(&mut data)
                        .with_context(|| format!("cannot read {}", f.display()))?;
                }
                _ => {
                    io::stdin().take(limit).read_to_end(&mut data).context("cannot read standard input")?;
                }
            }
            let cid = node.block_put(data, &cid_codec, &mhtype, pin)?;
            writeln!(out, "{cid}")?;
        }
        BlockCommand::Stat { cid } => {
            let cid = parse_cid(&cid)?;
            let size = node.block_size(&cid)?;
            writeln!(out, "Key: {cid}\nSize: {size}")?;
        }
        BlockCommand::Rm { cids } => {
            let mut failed = 0;
            for c in cids {
                let cid = parse_cid(&c)?;
                match node.block_rm(&cid) {
                    Ok(()) => writeln!(out, "removed {cid}")?,
                    Err(e) => {
                        failed += 1;
                        eprintln!("Error: {e:#}");
                    }
                }
            }
            if failed > 0 {
                bail!("some blocks not removed");
            }
        }
    }
    Ok(())
}

fn dag(node: &Backend, cmd: DagCommand, out: &mut dyn Write) -> Result<()> {
    match cmd {
        DagCommand::Import { files, pin_roots } => {
            for f in files {
                let car: Box<dyn Read + Send> = if f == "-" {
                    Box::new(io::stdin())
                } else {
                    Box::new(std::fs::File::open(&f).with_context(|| format!("cannot open {f}"))?)
                };
                let roots = node.dag_import(car, pin_roots).with_context(|| format!("importing {f}"))?;
                if pin_roots {
                    for root in roots {
                        writeln!(out, "Pinned root\t{root}\tsuccess")?;
                    }
                }
            }
        }
        DagCommand::Export { cid } => {
            let cid = parse_cid(&cid)?;
            let mut buf = io::BufWriter::with_capacity(1 << 20, out);
            node.dag_export(&cid, &mut buf)?;
            buf.flush()?;
        }
    }
    Ok(())
}

fn repo(node: &Backend, cmd: RepoCommand, out: &mut dyn Write, json: bool) -> Result<()> {
    match cmd {
        RepoCommand::Stat => {
            let s = node.repo_summary()?;
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"NumObjects": s.num_objects, "RepoSize": s.repo_size, "StorageMax": s.storage_max,
                        "RepoPath": s.repo_path, "Version": s.version})
                )?;
            } else {
                writeln!(out, "NumObjects: {}", s.num_objects)?;
                writeln!(out, "RepoSize:   {}", s.repo_size)?;
                writeln!(out, "StorageMax: {}", s.storage_max)?;
                writeln!(out, "RepoPath:   {}", s.repo_path)?;
                writeln!(out, "Version:    {}", s.version)?;
            }
        }
        RepoCommand::Verify => {
            let corrupt = node.repo_verify(&mut |msg| writeln!(out, "{msg}"))?;
            if corrupt > 0 {
                out.flush()?;
                bail!("verify complete, {corrupt} blocks corrupt");
            }
            writeln!(out, "verify complete, all blocks validated.")?;
        }
        RepoCommand::Gc { quiet } => {
            for cid in node.repo_gc()? {
                if quiet {
                    writeln!(out, "{cid}")?;
                } else {
                    writeln!(out, "removed {cid}")?;
                }
            }
        }
    }
    Ok(())
}
