//! `bittorrent import|seed|unseed|ls|metainfo`. Imports run in the daemon when one is up (through its API,
//! the .torrent file uploaded) and in this process otherwise; seeding needs the daemon, which keeps the
//! swarm; `metainfo` only reads the file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::online_client;
use crate::api::Node;
use crate::bittorrent::{self, ImportEvent, ImportRequest, Torrents};
use crate::client::Client;

#[derive(Debug, Subcommand)]
pub enum BitTorrentCommand {
    /// Download a torrent (a .torrent file, magnet link or infohash) into the store; prints the root CID.
    Import {
        source: String,
        /// Only these files, by index (see `metainfo`): `--only 0,3`.
        #[arg(long, value_delimiter = ',')]
        only: Option<Vec<usize>>,
        /// Give up when no data arrives for this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// DHT bootstrap node (`host:port`) for this import, instead of `BitTorrent.DhtBootstrap`.
        #[arg(long = "dht-bootstrap")]
        dht_bootstrap: Vec<String>,
        /// No progress bar.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Seed the torrent once it is imported (needs the daemon); prints its magnet after the root CID.
        #[arg(long)]
        seed: bool,
    },
    /// Seed a UnixFS file or directory (an imported torrent keeps its infohash); prints the magnet link.
    Seed {
        cid: String,
        /// Tracker to announce to (repeatable), besides the torrent's own and `BitTorrent.Trackers`.
        #[arg(long)]
        tracker: Vec<String>,
        /// The torrent's name, for a new torrent (default: the CID).
        #[arg(long)]
        name: Option<String>,
    },
    /// Stop seeding a torrent (by infohash or root CID).
    Unseed { key: String },
    /// Torrents imported or seeded by this node.
    Ls,
    /// Print a .torrent file's metadata as JSON.
    Metainfo { file: PathBuf },
}

pub(crate) fn run(repo: &Path, cmd: BitTorrentCommand, out: &mut dyn Write, json: bool) -> Result<()> {
    match cmd {
        BitTorrentCommand::Import { source, only, timeout, dht_bootstrap, quiet, seed } => {
            let stall = timeout.map_or(bittorrent::DEFAULT_STALL, Duration::from_secs);
            let dht = (!dht_bootstrap.is_empty()).then_some(dht_bootstrap);
            let bar = Bar::new(quiet);
            let client = Client::discover(repo)?;
            if seed && client.is_none() {
                bail!("--seed needs a running daemon: seeds are served by `btfs daemon`");
            }
            let (record, magnet) = match client {
                Some(client) => {
                    import_remote(&client, &source, RemoteImport { only, timeout, dht, quiet, seed }, &bar)?
                }
                None => {
                    let node = Arc::new(Node::open(repo)?);
                    let req = ImportRequest { source, torrent: None, only, stall_timeout: stall, dht_bootstrap: dht };
                    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
                    let torrents = Torrents::offline(node);
                    let events = |e: ImportEvent| bar.event(&e);
                    let imported = runtime.block_on(torrents.import(req, &events))?;
                    (serde_json::to_value(&imported.record)?, None)
                }
            };
            bar.finish();
            if json {
                let mut record = record;
                if let Some(m) = &magnet {
                    record["magnet"] = Value::from(m.as_str());
                }
                writeln!(out, "{record}")?;
            } else {
                writeln!(out, "{}", record["root"].as_str().unwrap_or_default())?;
                if let Some(m) = magnet {
                    writeln!(out, "{m}")?;
                }
            }
        }
        BitTorrentCommand::Seed { cid, tracker, name } => {
            let client = online_client(repo)?;
            let mut query = vec![("arg", cid)];
            if !tracker.is_empty() {
                query.push(("tracker", tracker.join(",")));
            }
            if let Some(n) = name {
                query.push(("name", n));
            }
            let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut answer = Value::Null;
            client.command("bittorrent/seed", &q, &mut |v| answer = v)?;
            if json {
                writeln!(out, "{answer}")?;
            } else {
                writeln!(out, "{}", answer["Magnet"].as_str().unwrap_or_default())?;
            }
        }
        BitTorrentCommand::Unseed { key } => {
            let client = online_client(repo)?;
            client.command("bittorrent/unseed", &[("arg", &key)], &mut |_| {})?;
        }
        BitTorrentCommand::Ls => {
            let records: Vec<Value> = match Client::discover(repo)? {
                Some(client) => {
                    let mut all = Vec::new();
                    client.command("bittorrent/ls", &[], &mut |v| {
                        all.extend(v["Torrents"].as_array().cloned().unwrap_or_default());
                    })?;
                    all
                }
                None => {
                    let torrents = Torrents::offline(Arc::new(Node::open(repo)?));
                    torrents.list()?.iter().map(serde_json::to_value).collect::<Result<_, _>>()?
                }
            };
            for r in records {
                if json {
                    writeln!(out, "{r}")?;
                } else {
                    let seeding = if r["seeding"].as_bool() == Some(true) { " (seeding)" } else { "" };
                    let (ih, root, name) = (&r["info_hash"], &r["root"], &r["name"]);
                    writeln!(
                        out,
                        "{} {} {}{seeding}",
                        ih.as_str().unwrap_or(""),
                        root.as_str().unwrap_or(""),
                        name.as_str().unwrap_or("")
                    )?;
                }
            }
        }
        BitTorrentCommand::Metainfo { file } => {
            let meta = std::fs::metadata(&file).with_context(|| format!("cannot read {}", file.display()))?;
            if meta.len() > bittorrent::MAX_TORRENT_FILE {
                bail!("{} is larger than {} bytes; not a .torrent file", file.display(), bittorrent::MAX_TORRENT_FILE);
            }
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let value = bittorrent::metainfo_json(&bytes, &file.display().to_string())?;
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        }
    }
    Ok(())
}

/// The options of an import through the daemon.
struct RemoteImport {
    only: Option<Vec<usize>>,
    timeout: Option<u64>,
    dht: Option<Vec<String>>,
    quiet: bool,
    seed: bool,
}

/// An import through the daemon: a local .torrent file is uploaded, anything else passed as the argument.
/// Returns the record, and the magnet when the daemon was asked to seed.
fn import_remote(client: &Client, source: &str, opts: RemoteImport, bar: &Bar) -> Result<(Value, Option<String>)> {
    let RemoteImport { only, timeout, dht, quiet, seed } = opts;
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(o) = only {
        query.push(("only", o.iter().map(usize::to_string).collect::<Vec<_>>().join(",")));
    }
    if let Some(t) = timeout {
        query.push(("timeout", t.to_string()));
    }
    if let Some(d) = dht {
        query.push(("dht-bootstrap", d.join(",")));
    }
    if quiet {
        query.push(("quiet", "true".into()));
    }
    if seed {
        query.push(("seed", "true".into()));
    }
    let mut record = Value::Null;
    let mut magnet = None;
    let mut each = |v: Value| {
        if v["Event"] == "Imported" {
            record = v["Record"].clone();
            magnet = v["Magnet"].as_str().map(str::to_string);
        } else if let Ok(e) = serde_json::from_value::<ImportEvent>(v) {
            bar.event(&e);
        }
    };
    if bittorrent::is_link(source) {
        query.insert(0, ("arg", source.to_string()));
        let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        client.command("bittorrent/import", &q, &mut each)?;
    } else {
        let len = std::fs::metadata(source).with_context(|| format!("cannot read {source}"))?.len();
        if len > bittorrent::MAX_TORRENT_FILE {
            bail!("{source} is larger than {} bytes; not a .torrent file", bittorrent::MAX_TORRENT_FILE);
        }
        let bytes = std::fs::read(source).with_context(|| format!("cannot read {source}"))?;
        let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        client.command_with_file("bittorrent/import", &q, source, bytes, &mut each)?;
    }
    if record.is_null() {
        bail!("the daemon ended the import without a result");
    }
    Ok((record, magnet))
}

/// The import's progress on stderr (hidden with `-q` or when stderr is not a terminal).
struct Bar {
    bar: ProgressBar,
    quiet: bool,
}

impl Bar {
    fn new(quiet: bool) -> Self {
        let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(0) };
        bar.set_style(
            ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self { bar, quiet }
    }

    fn event(&self, e: &ImportEvent) {
        match e {
            ImportEvent::Metadata { name, total, .. } => {
                self.bar.set_length(*total);
                self.bar.set_message(name.clone());
            }
            ImportEvent::Download { done, total, .. } => {
                self.bar.set_length(*total);
                self.bar.set_position(*done);
            }
            ImportEvent::Resumed { held, total } => {
                if !self.quiet {
                    self.bar.suspend(|| eprintln!("resuming: {held} of {total} bytes are already in the store"));
                }
                self.bar.set_position(*held);
            }
            ImportEvent::Adding => self.bar.set_message("building the DAG"),
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
