//! The HTML directory listing: built from the directory's own nodes (names, the sizes its links record, and
//! CIDs), so a directory of 10 000 entries costs one page of string building, not 10 000 block reads.

use std::fmt::Write;

use btfs_chunker::walk::Entry;

use crate::request::{ContentPath, encode_segment};

/// Bumped whenever the page's markup changes, so that listing ETags change with it.
pub(crate) const TEMPLATE_VERSION: &str = "1";

/// Escapes text for HTML element content and double-quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A byte count for people: `1.5 MiB`.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Renders the listing of the directory at `path` (whose CID is `dir_cid`).
///
/// The markup follows kubo's listing where tools look at it: breadcrumbs of the path, a `..` link below the
/// root, entry links under the directory's path, and `class="ipfs-hash"` links to each entry's own CID.
pub(crate) fn render(path: &ContentPath, dir_cid: &str, entries: &[Entry]) -> String {
    let base = path.encoded();
    let mut html = String::with_capacity(1024 + entries.len() * 360);
    let mut title = format!("/{}/{}", path.namespace, path.root_text);
    for s in &path.segments {
        title.push('/');
        title.push_str(s);
    }
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}/</title>\n<style>\n\
         body{{font-family:system-ui,sans-serif;margin:2rem auto;max-width:64rem;padding:0 1rem;color:#1d2b36}}\n\
         h1{{font-size:1.05rem;font-weight:600;word-break:break-all}}\n\
         .ipfs-hash,.meta{{font-family:ui-monospace,monospace;font-size:.8rem;color:#667}}\n\
         table{{border-collapse:collapse;width:100%}}\ntd{{padding:.35rem .5rem;border-bottom:1px solid #e3e7ea}}\n\
         td.size{{text-align:right;white-space:nowrap}}\na{{color:#0b6bcb;text-decoration:none}}\n\
         a:hover{{text-decoration:underline}}\n</style>\n</head>\n<body>\n<h1>Index of ",
        title = escape(&title),
    );
    // Breadcrumbs: each step links to its own path.
    let mut crumb = format!("/{}/{}", path.namespace, path.root_text);
    let _ = write!(html, "/{}/<a href=\"{}\">{}</a>", path.namespace, escape(&crumb), escape(&path.root_text));
    for s in &path.segments {
        crumb.push('/');
        crumb.push_str(&encode_segment(s));
        let _ = write!(html, "/<a href=\"{}\">{}</a>", escape(&crumb), escape(s));
    }
    let _ = write!(
        html,
        "</h1>\n<p class=\"meta\">{cid} &middot; {n} entries</p>\n<table>\n",
        cid = escape(dir_cid),
        n = entries.len(),
    );
    if !path.segments.is_empty() {
        let _ = writeln!(html, "<tr><td><a href=\"{}/..\">..</a></td><td></td><td></td></tr>", escape(&base));
    }
    for e in entries {
        let name = encode_segment(&e.name);
        let _ = writeln!(
            html,
            "<tr><td><a href=\"{href}\">{text}</a></td>\
             <td><a class=\"ipfs-hash\" translate=\"no\" href=\"/{ns}/{cid}?filename={fname}\">{cid}</a></td>\
             <td class=\"size\">{size}</td></tr>",
            href = escape(&format!("{base}/{name}")),
            text = escape(&e.name),
            ns = path.namespace,
            cid = e.cid,
            fname = escape(&urlencoding::encode(&name)),
            size = e.tsize.map(human_size).unwrap_or_default(),
        );
    }
    html.push_str("</table>\n</body>\n</html>\n");
    html
}

/// The HTML page a browser gets for a dag-json or dag-cbor block: what it is, where it links, and links to
/// its other forms. dag-json blocks are shown as they are; dag-cbor is binary and is only summarised.
pub(crate) fn render_dag(path: &str, cid: &str, codec: &str, data: &[u8], links: &[btfs_chunker::Cid]) -> String {
    let mut html = String::with_capacity(1024 + data.len());
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{cid}</title>\n<style>\n\
         body{{font-family:system-ui,sans-serif;margin:2rem auto;max-width:64rem;padding:0 1rem;color:#1d2b36}}\n\
         pre,code{{font-family:ui-monospace,monospace;font-size:.85rem}}\npre{{background:#f4f6f8;padding:1rem;\
         overflow:auto}}\n</style>\n</head>\n<body>\n<h1>{codec} block</h1>\n<p><code>{cid}</code> &middot; {n} bytes \
         &middot; <a href=\"{path}?format=raw\">raw</a> &middot; <a href=\"{path}?format={codec}\">{codec}</a> &middot; \
         <a href=\"{path}?format=car\">car</a></p>\n",
        cid = escape(cid),
        codec = escape(codec),
        n = data.len(),
        path = escape(path),
    );
    if codec == "dag-json" {
        let _ = writeln!(html, "<pre>{}</pre>", escape(&String::from_utf8_lossy(data)));
    }
    if !links.is_empty() {
        html.push_str("<h2>Links</h2>\n<ul>\n");
        for link in links {
            let _ = writeln!(html, "<li><a href=\"/ipfs/{link}/\">{link}</a></li>");
        }
        html.push_str("</ul>\n");
    }
    html.push_str("</body>\n</html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use btfs_chunker::Cid;

    #[test]
    fn names_are_escaped_and_links_encoded() {
        let cid: Cid = "bafkqaaa".parse().expect("test value");
        let path = ContentPath::parse("/ipfs/bafkqaaa/sub/").expect("test value");
        let entries = vec![Entry { name: "<b>&x y.txt".into(), cid, tsize: Some(2048) }];
        let html = render(&path, "bafkqaaa", &entries);
        assert!(html.contains("&lt;b&gt;&amp;x y.txt</a>"));
        assert!(html.contains("href=\"/ipfs/bafkqaaa/sub/%3Cb%3E&amp;x%20y.txt\""));
        assert!(html.contains("2.0 KiB"));
        assert!(html.contains("<a href=\"/ipfs/bafkqaaa/sub/..\">..</a>"));
        assert!(html.contains("/ipfs/<a href=\"/ipfs/bafkqaaa\">bafkqaaa</a>/<a href=\"/ipfs/bafkqaaa/sub\">sub</a>"));
        let root = render(&ContentPath::parse("/ipfs/bafkqaaa/").expect("test value"), "bafkqaaa", &entries);
        assert!(!root.contains(">..</a>"));
        assert!(!html.contains("<b>&x"));
    }
}
