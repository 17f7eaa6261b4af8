//! The CLI's remote mode: a synchronous client (ureq) of a running daemon's RPC API.
//!
//! `Client::discover` reads `$BTFS_PATH/api` (a multiaddr such as `/ip4/127.0.0.1/tcp/5001`, written by
//! the daemon) and asks the API for its version; a missing file or an address where nothing answers means
//! there is no daemon, and the CLI opens the repo itself. Each method is one API command and returns the
//! library's own types, so the CLI prints the same text in both modes; a command's failure comes back as
//! the daemon's message, which is the text local mode prints for the same error.
//!
//! Uploads stream: `add` builds its multipart body lazily from the files on disk (kubo's layout, see
//! `rpc::upload`), reading each file as the request is sent. ureq sends the whole request before it reads
//! the response; the daemon's per-entry output meanwhile waits in socket buffers, which hold on the order
//! of 100,000 entries' lines before an upload of that many files would stall.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use btfs_chunker::Cid;
use btfs_chunker::import::Profile;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::add::{self, AddError, AddEvents, AddInput, AddOptions, Added};
use crate::api::{ConfigValueKind, IdInfo, RepoSummary};
use crate::blocks::PinFilter;
use crate::read::{EntryKind, LsEntry};

/// How long to wait for the daemon to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the version probe may take before the address counts as not answering.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest JSON line accepted from the daemon (a `ls` of a large directory is one line).
const MAX_LINE: u64 = 256 * 1024 * 1024;

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The command failed in the daemon; this is its message.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("the api file {path} holds {addr:?}, which is not a TCP multiaddr")]
    BadApiFile { path: String, addr: String },
    #[error("cannot read the api file {path}")]
    ApiFile { path: String, source: io::Error },
    #[error("cannot reach the daemon at {url}")]
    Connect { url: String, source: Box<ureq::Error> },
    #[error("the daemon's response broke off (see the daemon's log)")]
    Truncated(#[source] io::Error),
    #[error("unexpected response from the daemon: {0}")]
    Protocol(String),
    #[error(transparent)]
    Add(#[from] AddError),
    #[error(transparent)]
    Extract(#[from] crate::tar::ExtractError),
    #[error("write failed")]
    Output(#[source] io::Error),
}

/// A client of one daemon's API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    /// The client for the daemon named in `<repo>/api`, if that file exists and a btfs API answers there.
    pub fn discover(repo: &Path) -> Result<Option<Self>, ClientError> {
        let path = repo.join("api");
        let addr = match fs::read_to_string(&path) {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ClientError::ApiFile { path: path.display().to_string(), source }),
        };
        let base = api_url(addr.trim())
            .ok_or_else(|| ClientError::BadApiFile { path: path.display().to_string(), addr: addr.trim().into() })?;
        let client = Self::new(&base);
        // A stale file (the daemon died without removing it) names an address where nothing answers.
        let probe = client
            .agent
            .post(format!("{}/version", client.base))
            .config()
            .timeout_global(Some(PROBE_TIMEOUT))
            .build()
            .send_empty();
        match probe {
            Ok(mut resp) if resp.status() == 200 => {
                let v: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
                Ok(v.get("Version").is_some().then_some(client))
            }
            _ => Ok(None),
        }
    }

    /// A client of the API at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        let config =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_connect(Some(CONNECT_TIMEOUT)).build();
        Self { base: format!("{}/api/v0", base.trim_end_matches('/')), agent: ureq::Agent::new_with_config(config) }
    }

    fn request(&self, cmd: &str, query: &[(&str, &str)]) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        let mut url = format!("{}/{cmd}", self.base);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&urlencoding::encode(k));
            url.push('=');
            url.push_str(&urlencoding::encode(v));
        }
        // This client cannot read trailers, so it asks for a late error as a last JSON line.
        self.agent.post(url).header(crate::rpc::INLINE_ERRORS_HEADER, "1")
    }

    /// Sends a request and turns an error status into the daemon's message.
    fn finish(
        &self,
        cmd: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        let mut resp =
            result.map_err(|e| ClientError::Connect { url: format!("{}/{cmd}", self.base), source: Box::new(e) })?;
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(resp);
        }
        let text = resp.body_mut().with_config().limit(1 << 20).read_to_string().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("Message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        Err(ClientError::Api { status, message })
    }

    fn call(&self, cmd: &str, query: &[(&str, &str)]) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        self.finish(cmd, self.request(cmd, query).send_empty())
    }

    /// A command that answers one JSON value.
    fn json<T: DeserializeOwned>(&self, cmd: &str, query: &[(&str, &str)]) -> Result<T, ClientError> {
        let resp = self.call(cmd, query)?;
        read_json_line(&mut BufReader::new(resp.into_body().into_reader()))?
            .ok_or_else(|| ClientError::Protocol(format!("{cmd} answered nothing")))
    }

    /// A command that answers JSON values, one a line.
    fn lines<T: DeserializeOwned>(
        &self,
        resp: ureq::http::Response<ureq::Body>,
        mut each: impl FnMut(T) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let mut reader = BufReader::new(resp.into_body().into_reader());
        while let Some(v) = read_json_line(&mut reader)? {
            each(v)?;
        }
        Ok(())
    }

    /// A command that answers a byte stream, copied to `out`.
    fn stream(&self, resp: ureq::http::Response<ureq::Body>, out: &mut dyn Write) -> Result<(), ClientError> {
        copy(&mut resp.into_body().into_reader(), out)
    }

    pub fn add(
        &self,
        inputs: Vec<AddInput>,
        opts: &AddOptions,
        events: &mut dyn AddEvents,
    ) -> Result<Vec<Added>, ClientError> {
        // The same checks local mode makes, before anything is sent.
        opts.import.resolve().map_err(AddError::from)?;
        if inputs.is_empty() {
            return Err(AddError::Empty.into());
        }
        for input in &inputs {
            if let AddInput::Path(p) = input {
                let meta = fs::symlink_metadata(p).map_err(|e| add::read_err(p, e))?;
                if meta.is_dir() && !opts.recursive {
                    return Err(AddError::IsDirectory { path: p.display().to_string() }.into());
                }
            }
        }
        let query = add_query(opts);
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let boundary = format!("btfs-{:032x}", rand::random::<u128>());
        let mut body = MultipartBody::new(&boundary, inputs, opts.hidden, events);
        let sent = self
            .request("add", &query)
            .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
            .send(ureq::SendBody::from_reader(&mut body));
        if let Some(e) = body.error.take() {
            return Err(e.into());
        }
        let resp = self.finish("add", sent)?;
        let mut last = None;
        self.lines(resp, |event: Value| {
            // Progress lines carry `Bytes` and no `Hash`; this client counts its own bytes.
            let Some(hash) = event.get("Hash").and_then(Value::as_str) else { return Ok(()) };
            let added = Added {
                cid: parse_cid(hash)?,
                name: event.get("Name").and_then(Value::as_str).unwrap_or_default().to_string(),
                size: event.get("Size").and_then(Value::as_str).and_then(|s| s.parse().ok()).unwrap_or(0),
            };
            events.added(&added);
            last = Some(added);
            Ok(())
        })?;
        Ok(last.into_iter().collect())
    }

    pub fn cat(&self, path: &str, offset: u64, length: Option<u64>, out: &mut dyn Write) -> Result<(), ClientError> {
        let (offset, length) = (offset.to_string(), length.map(|l| l.to_string()));
        let mut query = vec![("arg", path), ("offset", offset.as_str())];
        if let Some(l) = &length {
            query.push(("length", l.as_str()));
        }
        let resp = self.call("cat", &query)?;
        self.stream(resp, out)
    }

    /// `get` into `dest`; `on_total` hears the content size when the daemon knows it.
    pub fn get(
        &self,
        path: &str,
        dest: &Path,
        on_total: &dyn Fn(u64),
        progress: &dyn Fn(u64),
    ) -> Result<(), ClientError> {
        let resp = self.call("get", &[("arg", path)])?;
        if let Some(n) = resp.headers().get("x-content-length").and_then(|v| v.to_str().ok()?.parse().ok()) {
            on_total(n);
        }
        let reader = resp.into_body().into_reader();
        crate::tar::extract(reader, dest, progress).map_err(|e| match e {
            crate::tar::ExtractError::Read(io) => ClientError::Truncated(io),
            other => other.into(),
        })
    }

    pub fn ls(&self, path: &str) -> Result<Vec<LsEntry>, ClientError> {
        let out: Value = self.json("ls", &[("arg", path)])?;
        let links = out
            .pointer("/Objects/0/Links")
            .and_then(Value::as_array)
            .ok_or_else(|| ClientError::Protocol("ls answered no Objects".into()))?;
        links
            .iter()
            .map(|l| {
                let text = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                Ok(LsEntry {
                    name: text("Name"),
                    cid: parse_cid(&text("Hash"))?,
                    size: l.get("Size").and_then(Value::as_u64).unwrap_or(0),
                    kind: match l.get("Type").and_then(Value::as_u64) {
                        Some(1 | 5) => EntryKind::Directory,
                        Some(2) => EntryKind::File,
                        Some(4) => EntryKind::Symlink,
                        _ => EntryKind::Unknown,
                    },
                    target: text("Target"),
                })
            })
            .collect()
    }

    /// Pins `path`; returns the CID it resolved to.
    pub fn pin_add(&self, path: &str, recursive: bool) -> Result<Cid, ClientError> {
        let out: Value = self.json("pin/add", &[("arg", path), ("recursive", bool_str(recursive))])?;
        first_pin(&out)
    }

    pub fn pin_rm(&self, path: &str) -> Result<Cid, ClientError> {
        let out: Value = self.json("pin/rm", &[("arg", path)])?;
        first_pin(&out)
    }

    /// All pins of a kind, in the daemon's order.
    pub fn pin_ls(&self, filter: PinFilter) -> Result<Vec<(Cid, String)>, ClientError> {
        let kind = match filter {
            PinFilter::All => "all",
            PinFilter::Recursive => "recursive",
            PinFilter::Direct => "direct",
            PinFilter::Indirect => "indirect",
        };
        let resp = self.call("pin/ls", &[("type", kind), ("stream", "true")])?;
        let mut out = Vec::new();
        self.lines(resp, |v: Value| {
            let cid = parse_cid(v.get("Cid").and_then(Value::as_str).unwrap_or_default())?;
            out.push((cid, v.get("Type").and_then(Value::as_str).unwrap_or_default().to_string()));
            Ok(())
        })?;
        Ok(out)
    }

    pub fn block_get(&self, cid: &Cid, out: &mut dyn Write) -> Result<(), ClientError> {
        let resp = self.call("block/get", &[("arg", &cid.to_string())])?;
        self.stream(resp, out)
    }

    /// Stores `data` (read to its end) as one block; returns its CID.
    pub fn block_put(&self, data: &[u8], codec: &str, mhtype: &str, pin: bool) -> Result<Cid, ClientError> {
        let boundary = format!("btfs-{:032x}", rand::random::<u128>());
        let mut body = Vec::with_capacity(data.len() + 256);
        body.extend_from_slice(part_header(&boundary, "", "application/octet-stream").as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let query = [("cid-codec", codec), ("mhtype", mhtype), ("pin", bool_str(pin))];
        let sent = self
            .request("block/put", &query)
            .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
            .send(&body[..]);
        let resp = self.finish("block/put", sent)?;
        let mut key = None;
        self.lines(resp, |v: Value| {
            key = v.get("Key").and_then(Value::as_str).map(str::to_string);
            Ok(())
        })?;
        parse_cid(&key.ok_or_else(|| ClientError::Protocol("block/put answered no Key".into()))?)
    }

    /// A block's size.
    pub fn block_stat(&self, cid: &Cid) -> Result<u64, ClientError> {
        let out: Value = self.json("block/stat", &[("arg", &cid.to_string())])?;
        out.get("Size")
            .and_then(Value::as_u64)
            .ok_or_else(|| ClientError::Protocol("block/stat answered no Size".into()))
    }

    pub fn block_rm(&self, cid: &Cid) -> Result<(), ClientError> {
        let resp = self.call("block/rm", &[("arg", &cid.to_string())])?;
        let mut result = Ok(());
        self.lines(resp, |v: Value| {
            if let Some(e) = v.get("Error").and_then(Value::as_str) {
                result = Err(ClientError::Api { status: 200, message: e.to_string() });
            }
            Ok(())
        })?;
        result
    }

    /// Imports one CAR; returns its roots (reported only when they were pinned).
    pub fn dag_import(&self, car: Box<dyn Read + Send>, pin_roots: bool) -> Result<Vec<Cid>, ClientError> {
        let boundary = format!("btfs-{:032x}", rand::random::<u128>());
        let body = io::Cursor::new(part_header(&boundary, "", "application/octet-stream").into_bytes())
            .chain(car)
            .chain(io::Cursor::new(format!("\r\n--{boundary}--\r\n").into_bytes()));
        let sent = self
            .request("dag/import", &[("pin-roots", bool_str(pin_roots))])
            .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
            .send(ureq::SendBody::from_owned_reader(body));
        let resp = self.finish("dag/import", sent)?;
        let mut roots = Vec::new();
        self.lines(resp, |v: Value| {
            if let Some(cid) = v.pointer("/Root/Cid/~1").and_then(Value::as_str) {
                roots.push(parse_cid(cid)?);
            }
            Ok(())
        })?;
        Ok(roots)
    }

    pub fn dag_export(&self, cid: &Cid, out: &mut dyn Write) -> Result<(), ClientError> {
        let resp = self.call("dag/export", &[("arg", &cid.to_string())])?;
        self.stream(resp, out)
    }

    pub fn repo_summary(&self) -> Result<RepoSummary, ClientError> {
        let v: Value = self.json("repo/stat", &[])?;
        let num = |k: &str| v.get(k).and_then(Value::as_u64).ok_or_else(|| ClientError::Protocol(format!("no {k}")));
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        Ok(RepoSummary {
            num_objects: num("NumObjects")?,
            repo_size: num("RepoSize")?,
            storage_max: num("StorageMax")?,
            repo_path: text("RepoPath"),
            version: text("Version"),
        })
    }

    /// `repo verify`: `on_corrupt` gets the daemon's message for each corrupt block; returns how many
    /// there were. The daemon ends a verify that found corruption with an error after its output: with
    /// corrupt blocks reported, that is the expected end.
    pub fn repo_verify(&self, on_corrupt: &mut dyn FnMut(&str) -> Result<(), ClientError>) -> Result<u64, ClientError> {
        let resp = self.call("repo/verify", &[])?;
        let mut corrupt = 0u64;
        let result = self.lines(resp, |v: Value| {
            let msg = v.get("Msg").and_then(Value::as_str).unwrap_or_default();
            if msg.contains("was corrupt") {
                corrupt += 1;
                on_corrupt(msg)?;
            }
            Ok(())
        });
        match result {
            Err(ClientError::Api { .. } | ClientError::Truncated(_)) if corrupt > 0 => Ok(corrupt),
            other => other.map(|()| corrupt),
        }
    }

    pub fn repo_gc(&self) -> Result<Vec<Cid>, ClientError> {
        let resp = self.call("repo/gc", &[])?;
        let mut removed = Vec::new();
        self.lines(resp, |v: Value| {
            if let Some(e) = v.get("Error").and_then(Value::as_str) {
                return Err(ClientError::Api { status: 200, message: e.to_string() });
            }
            if let Some(cid) = v.pointer("/Key/~1").and_then(Value::as_str) {
                removed.push(parse_cid(cid)?);
            }
            Ok(())
        })?;
        Ok(removed)
    }

    pub fn config_get(&self, key: &str) -> Result<Value, ClientError> {
        let v: Value = self.json("config", &[("arg", key)])?;
        Ok(v.get("Value").cloned().unwrap_or(Value::Null))
    }

    pub fn config_set(&self, key: &str, raw: &str, kind: ConfigValueKind) -> Result<(), ClientError> {
        let mut query = vec![("arg", key), ("arg", raw)];
        match kind {
            ConfigValueKind::Json => query.push(("json", "true")),
            ConfigValueKind::Bool => query.push(("bool", "true")),
            ConfigValueKind::String => {}
        }
        let _: Value = self.json("config", &query)?;
        Ok(())
    }

    pub fn config_show(&self) -> Result<Value, ClientError> {
        self.json("config/show", &[])
    }

    pub fn id(&self) -> Result<IdInfo, ClientError> {
        self.json("id", &[])
    }

    /// Any command that answers JSON values, one a line (the network commands): each value in order.
    pub fn command(&self, cmd: &str, query: &[(&str, &str)], each: &mut dyn FnMut(Value)) -> Result<(), ClientError> {
        let resp = self.call(cmd, query)?;
        self.lines(resp, |v: Value| {
            each(v);
            Ok(())
        })
    }

    /// A command that takes one uploaded file (multipart, as kubo sends file arguments), answering JSON lines.
    pub fn command_with_file(
        &self,
        cmd: &str,
        query: &[(&str, &str)],
        name: &str,
        bytes: Vec<u8>,
        each: &mut dyn FnMut(Value),
    ) -> Result<(), ClientError> {
        let boundary = format!("btfs-{:032x}", rand::random::<u128>());
        let mut body = part_header(&boundary, name, "application/octet-stream").into_bytes();
        body.extend_from_slice(&bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let sent = self
            .request(cmd, query)
            .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
            .send(&body[..]);
        let resp = self.finish(cmd, sent)?;
        self.lines(resp, |v: Value| {
            each(v);
            Ok(())
        })
    }

    /// Asks the daemon to stop.
    pub fn shutdown(&self) -> Result<(), ClientError> {
        self.call("shutdown", &[]).map(drop)
    }
}

/// `http://host:port` for an API multiaddr (`/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>[/http]`).
fn api_url(addr: &str) -> Option<String> {
    let parts: Vec<&str> = addr.trim_start_matches('/').split('/').collect();
    let (proto, host, port) = match parts.as_slice() {
        [proto, host, "tcp", port] | [proto, host, "tcp", port, "http"] => (*proto, *host, port.parse::<u16>().ok()?),
        _ => return None,
    };
    match proto {
        "ip4" => host.parse::<std::net::Ipv4Addr>().ok().map(|ip| format!("http://{ip}:{port}")),
        "ip6" => host.parse::<std::net::Ipv6Addr>().ok().map(|ip| format!("http://[{ip}]:{port}")),
        "dns" | "dns4" | "dns6" if !host.is_empty() => Some(format!("http://{host}:{port}")),
        _ => None,
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

fn parse_cid(s: &str) -> Result<Cid, ClientError> {
    Cid::try_from(s).map_err(|_| ClientError::Protocol(format!("{s:?} is not a CID")))
}

fn first_pin(out: &Value) -> Result<Cid, ClientError> {
    let cid = out.pointer("/Pins/0").and_then(Value::as_str).ok_or_else(|| ClientError::Protocol("no Pins".into()))?;
    parse_cid(cid)
}

/// Reads one JSON value from its own line; `None` at the end of the stream.
fn read_json_line<T: DeserializeOwned>(reader: &mut impl BufRead) -> Result<Option<T>, ClientError> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.take(MAX_LINE).read_line(&mut line).map_err(ClientError::Truncated)?;
        if n == 0 {
            return Ok(None);
        }
        if !line.ends_with('\n') && n as u64 == MAX_LINE {
            return Err(ClientError::Protocol("a response line is too long".into()));
        }
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| ClientError::Protocol(e.to_string()))?;
        // A command that failed after its output began ends with kubo's error object.
        if v.get("Type").and_then(Value::as_str) == Some("error")
            && let Some(message) = v.get("Message").and_then(Value::as_str)
        {
            return Err(ClientError::Api { status: 200, message: message.to_string() });
        }
        return serde_json::from_value(v).map(Some).map_err(|e| ClientError::Protocol(e.to_string()));
    }
}

fn copy(from: &mut dyn Read, to: &mut dyn Write) -> Result<(), ClientError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ClientError::Truncated(e)),
        };
        to.write_all(&buf[..n]).map_err(ClientError::Output)?;
    }
    to.flush().map_err(ClientError::Output)
}

/// `add`'s options as kubo's query parameters.
fn add_query(opts: &AddOptions) -> Vec<(&'static str, String)> {
    let i = &opts.import;
    let mut q = vec![
        ("pin", bool_str(opts.pin).to_string()),
        ("only-hash", bool_str(opts.only_hash).to_string()),
        ("wrap-with-directory", bool_str(opts.wrap).to_string()),
        ("trickle", bool_str(i.trickle).to_string()),
        ("inline", bool_str(i.inline).to_string()),
    ];
    if let Some(p) = i.profile {
        let name = match p {
            Profile::UnixfsV0_2015 => "unixfs-v0-2015",
            Profile::UnixfsV1_2025 => "unixfs-v1-2025",
        };
        q.push(("cid-profile", name.to_string()));
    }
    if let Some(v) = i.cid_version {
        q.push(("cid-version", v.to_string()));
    }
    if let Some(r) = i.raw_leaves {
        q.push(("raw-leaves", bool_str(r).to_string()));
    }
    if let Some(c) = i.chunk_size {
        q.push(("chunker", c.to_string()));
    }
    if let Some(h) = i.hash {
        q.push(("hash", h.name().to_string()));
    }
    if let Some(l) = i.inline_limit {
        q.push(("inline-limit", l.to_string()));
    }
    if let Some(m) = i.max_links {
        q.push(("max-file-links", m.to_string()));
    }
    q
}

/// One part's headers, preceded by its boundary line. The name is escaped as Go's `url.QueryEscape`
/// would, which kubo's server undoes.
fn part_header(boundary: &str, name: &str, content_type: &str) -> String {
    format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: {content_type}\r\n\r\n",
        urlencoding::encode(name)
    )
}

/// `add`'s request body: the inputs as kubo's multipart layout, walked and read only as ureq asks for
/// bytes. A failure to read a local file stops the body and is kept in `error`.
struct MultipartBody<'a> {
    boundary: String,
    inputs: VecDeque<AddInput>,
    /// Directory walks in progress, innermost last: (path on disk, name in the upload) per entry left.
    walks: Vec<std::vec::IntoIter<(PathBuf, String)>>,
    hidden: bool,
    /// Bytes ready to send (boundaries and headers).
    pending: Vec<u8>,
    sent: usize,
    /// The file being sent and its path on disk, for errors.
    file: Option<(Box<dyn Read + Send>, String)>,
    finished: bool,
    events: &'a mut dyn AddEvents,
    error: Option<AddError>,
}

impl<'a> MultipartBody<'a> {
    fn new(boundary: &str, inputs: Vec<AddInput>, hidden: bool, events: &'a mut dyn AddEvents) -> Self {
        Self {
            boundary: boundary.to_string(),
            inputs: inputs.into(),
            walks: Vec::new(),
            hidden,
            pending: Vec::new(),
            sent: 0,
            file: None,
            finished: false,
            events,
            error: None,
        }
    }

    fn queue(&mut self, bytes: &[u8]) {
        self.pending.drain(..self.sent);
        self.sent = 0;
        self.pending.extend_from_slice(bytes);
    }

    fn header(&mut self, name: &str, content_type: &str) {
        let h = part_header(&self.boundary, name, content_type);
        self.queue(h.as_bytes());
    }

    /// Queues the next part; false when there are none left.
    fn next_part(&mut self) -> Result<bool, AddError> {
        let (path, name) = loop {
            if let Some(walk) = self.walks.last_mut() {
                match walk.next() {
                    Some(next) => break next,
                    None => {
                        self.walks.pop();
                        continue;
                    }
                }
            }
            match self.inputs.pop_front() {
                None => return Ok(false),
                Some(AddInput::Path(p)) => {
                    let name = add::base_name(&p)?;
                    break (p, name);
                }
                Some(AddInput::Stream { name, reader }) => {
                    self.header(name.as_deref().unwrap_or(""), "application/octet-stream");
                    self.file = Some((reader, "<stdin>".to_string()));
                    return Ok(true);
                }
                // The CLI has no streamed trees to send; a tree input would be a caller's mistake.
                Some(AddInput::Tree(_)) => return Err(AddError::Bug("a tree input cannot be sent to the daemon")),
            }
        };
        let meta = fs::symlink_metadata(&path).map_err(|e| add::read_err(&path, e))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| add::read_err(&path, e))?;
            let target =
                target.to_str().ok_or_else(|| AddError::BadName { path: path.display().to_string() })?.to_string();
            self.header(&name, "application/symlink");
            self.queue(target.as_bytes());
            self.queue(b"\r\n");
        } else if ft.is_dir() {
            let mut entries = Vec::new();
            for entry in fs::read_dir(&path).map_err(|e| add::read_err(&path, e))? {
                let entry = entry.map_err(|e| add::read_err(&path, e))?;
                let child = entry.file_name();
                let child =
                    child.to_str().ok_or_else(|| AddError::BadName { path: entry.path().display().to_string() })?;
                if !self.hidden && child.starts_with('.') {
                    continue;
                }
                entries.push((path.join(child), format!("{name}/{child}")));
            }
            entries.sort_by(|a, b| a.1.cmp(&b.1));
            self.header(&name, "application/x-directory");
            self.queue(b"\r\n");
            self.walks.push(entries.into_iter());
        } else if ft.is_file() {
            let file = fs::File::open(&path).map_err(|e| add::read_err(&path, e))?;
            self.header(&name, "application/octet-stream");
            self.file = Some((Box::new(file), path.display().to_string()));
        } else {
            return Err(AddError::FileType { path: path.display().to_string() });
        }
        Ok(true)
    }
}

impl Read for MultipartBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.sent < self.pending.len() {
                let n = buf.len().min(self.pending.len() - self.sent);
                buf[..n].copy_from_slice(&self.pending[self.sent..self.sent + n]);
                self.sent += n;
                return Ok(n);
            }
            if let Some((file, path)) = &mut self.file {
                match file.read(buf) {
                    Ok(0) => {
                        self.file = None;
                        self.queue(b"\r\n");
                        continue;
                    }
                    Ok(n) => {
                        self.events.progress(n as u64);
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let kind = e.kind();
                        self.error = Some(AddError::Read { path: path.clone(), source: e });
                        return Err(io::Error::new(kind, "cannot read a file being added"));
                    }
                }
            }
            if self.finished {
                return Ok(0);
            }
            match self.next_part() {
                Ok(true) => {}
                Ok(false) => {
                    let end = format!("--{}--\r\n", self.boundary);
                    self.queue(end.as_bytes());
                    self.finished = true;
                }
                Err(e) => {
                    self.error = Some(e);
                    return Err(io::Error::other("cannot read a file being added"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_files_name_tcp_addresses() {
        const CASES: &[(&str, Option<&str>)] = &[
            ("/ip4/127.0.0.1/tcp/5001", Some("http://127.0.0.1:5001")),
            ("/ip6/::1/tcp/5001", Some("http://[::1]:5001")),
            ("/dns4/localhost/tcp/5001/http", Some("http://localhost:5001")),
            ("/ip4/127.0.0.1/udp/5001", None),
            ("/ip4/not-an-ip/tcp/5001", None),
            ("/ip4/127.0.0.1/tcp/99999", None),
            ("", None),
        ];
        for (addr, want) in CASES {
            assert_eq!(api_url(addr).as_deref(), *want, "{addr:?}");
        }
    }
}
