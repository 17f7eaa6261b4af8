//! UnixFS commands: `add`, `cat`, `get`, `ls`.

use std::io::Write;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use btfs_chunker::import::{ChunkSize, Profile};
use serde::Serialize;

use super::{ApiError, Args, BodyWriter, Output, RpcContext, blocking, respond, single, upload};
use crate::add::{AddEvents, AddInput, AddOptions, Added};

pub(super) fn routes() -> Router<RpcContext> {
    Router::new()
        .route("/add", upload::route(add))
        .route("/cat", post(cat))
        .route("/get", post(get))
        .route("/ls", post(ls))
}

/// kubo's `add` options, resolved into the library's.
fn add_options(q: &Args) -> Result<AddOptions, ApiError> {
    let mut import = btfs_chunker::import::Options {
        cid_version: q.u64(&["cid-version"])?,
        raw_leaves: q.opt_bool(&["raw-leaves"])?,
        trickle: q.bool(&["trickle", "t"], false)?,
        inline: q.bool(&["inline"], false)?,
        inline_limit: q.u64(&["inline-limit"])?.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        max_links: q.u64(&["max-file-links"])?.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        ..Default::default()
    };
    if let Some(p) = q.string(&["cid-profile"])? {
        import.profile = Some(p.parse::<Profile>()?);
    }
    if let Some(c) = q.string(&["chunker", "s"])? {
        import.chunk_size = Some(c.parse::<ChunkSize>()?);
    }
    if let Some(h) = q.string(&["hash"])? {
        import.hash = Some(h.parse()?);
    }
    // Checked here so a bad combination is refused before the upload is read.
    import.resolve()?;
    let only_hash = q.bool(&["only-hash", "n"], false)?;
    Ok(AddOptions {
        import,
        pin: q.bool(&["pin"], true)? && !only_hash,
        only_hash,
        wrap: q.bool(&["wrap-with-directory", "w"], false)?,
        // Directory and hidden-file choices are made by the sender, which decides what to upload.
        recursive: true,
        hidden: true,
    })
}

/// One line of `add`'s output, as kubo's `AddEvent`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AddEvent<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<String>,
}

/// Writes `add`'s events as they happen. `quiet` and `quieter` only change what kubo's CLI prints, so the
/// API sends every entry; `silent` sends none.
struct AddStream<'a> {
    out: &'a mut BodyWriter,
    silent: bool,
    progress: bool,
    current: String,
    bytes: u64,
    error: Option<std::io::Error>,
}

impl AddStream<'_> {
    fn send(&mut self, event: &AddEvent<'_>) {
        if self.error.is_none()
            && let Err(e) = self.out.json(event).and_then(|()| self.out.flush())
        {
            self.error = Some(e);
        }
    }
}

impl AddEvents for AddStream<'_> {
    fn added(&mut self, entry: &Added) {
        if !self.silent {
            let hash = Some(entry.cid.to_string());
            self.send(&AddEvent { name: &entry.name, hash, bytes: None, size: Some(entry.size.to_string()) });
        }
    }

    fn file_started(&mut self, name: &str) {
        self.current = name.to_string();
        self.bytes = 0;
    }

    fn progress(&mut self, n: u64) {
        self.bytes += n;
        if self.progress && !self.silent {
            let name = std::mem::take(&mut self.current);
            self.send(&AddEvent { name: &name, hash: None, bytes: Some(self.bytes), size: None });
            self.current = name;
        }
    }
}

async fn add(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let opts = add_options(&q)?;
    let silent = q.bool(&["silent"], false)?;
    let progress = q.bool(&["progress", "p"], false)?;
    let (tree, pump) = upload::start(req, "path").await?;
    Ok(respond(Output::channel().upload(pump), move |out| {
        let mut events = AddStream { out, silent, progress, current: String::new(), bytes: 0, error: None };
        ctx.node.add(vec![AddInput::Tree(Box::new(tree))], &opts, &mut events)?;
        match events.error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    })
    .await)
}

/// `offset` and `length`, which kubo refuses when negative.
fn range(q: &Args) -> Result<(u64, Option<u64>), ApiError> {
    let offset = q.i64(&["offset", "o"])?.unwrap_or(0);
    let offset = u64::try_from(offset).map_err(|_| ApiError::failed("cannot specify negative offset"))?;
    let length = q
        .i64(&["length", "l"])?
        .map(|l| u64::try_from(l).map_err(|_| ApiError::failed("cannot specify negative length")))
        .transpose()?;
    Ok((offset, length))
}

async fn cat(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let paths = q.required_all("ipfs-path")?.to_vec();
    let (offset, length) = range(&q)?;
    // Resolving and sizing first turns a bad path into an error response rather than an aborted stream.
    let node = ctx.node.clone();
    let (paths, len) = blocking(move || {
        let len = node.cat_len(&paths, offset, length)?;
        Ok((paths, len))
    })
    .await?;
    Ok(respond(Output::stream("text/plain").length(len), move |out| {
        ctx.node.cat_all(&paths, offset, length, out)?;
        Ok(())
    })
    .await)
}

async fn get(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let path = q.required("ipfs-path")?.to_string();
    if q.bool(&["compress", "C"], false)? || q.u64(&["compression-level", "l"])?.is_some_and(|l| l > 0) {
        return Err(ApiError::failed("compressed output is not supported"));
    }
    let node = ctx.node.clone();
    let (path, size) = blocking(move || {
        // A file's size is kubo's X-Content-Length (for a progress bar); a tree has none here.
        let cid = node.resolve(&path)?;
        let size = node.file_size(&cid.to_string()).ok();
        Ok((path, size))
    })
    .await?;
    let mut output = Output::stream("application/x-tar");
    if let Some(size) = size {
        output = output.length(size);
    }
    Ok(respond(output, move |out| {
        ctx.node.get_tar(&path, out)?;
        Ok(())
    })
    .await)
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
struct LsLink {
    name: String,
    hash: String,
    size: u64,
    /// kubo's UnixFS type number: 1 directory, 2 file, 4 symlink, 0 unknown.
    #[serde(rename = "Type")]
    kind: u8,
    target: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct LsObject<'a> {
    hash: &'a str,
    links: Vec<LsLink>,
}

async fn ls(State(ctx): State<RpcContext>, req: Request) -> Result<Response, ApiError> {
    let q = Args::from_uri(req.uri())?;
    let paths = q.required_all("ipfs-path")?.to_vec();
    let stream = q.bool(&["stream", "s"], false)?;
    let node = ctx.node.clone();
    let listings = blocking(move || {
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            let (_, entries) = node.ls(&path)?;
            let links = entries
                .into_iter()
                .map(|e| LsLink {
                    name: e.name,
                    hash: e.cid.to_string(),
                    size: e.size,
                    kind: e.kind.unixfs_code(),
                    target: e.target,
                })
                .collect::<Vec<_>>();
            out.push((path, links));
        }
        Ok(out)
    })
    .await?;
    if !stream {
        let objects: Vec<LsObject<'_>> =
            listings.iter().map(|(path, links)| LsObject { hash: path, links: links.clone() }).collect();
        return Ok(single(&serde_json::json!({ "Objects": objects })));
    }
    // Streamed, kubo sends one object per link.
    Ok(respond(Output::channel(), move |out| {
        for (path, links) in listings {
            for link in links {
                out.json(&serde_json::json!({ "Objects": [LsObject { hash: &path, links: vec![link] }] }))?;
            }
        }
        out.flush()?;
        Ok(())
    })
    .await)
}
