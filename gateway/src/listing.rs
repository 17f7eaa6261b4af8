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
pub(crate) fn render(path: &ContentPath, dir_cid: &str, entries: &[Entry]) -> String {
    let base = format!("{}/", path.encoded());
    let title = format!("/{}/{}", path.namespace, {
        let mut p = path.root_text.clone();
        for s in &path.segments {
            p.push('/');
            p.push_str(s);
        }
        p
    });
    let mut html = String::with_capacity(512 + entries.len() * 320);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>\n\
         body{{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#1d2b36}}\n\
         h1{{font-size:1.1rem;word-break:break-all}}\n.cid{{font-family:monospace;font-size:.8rem;color:#667}}\n\
         table{{border-collapse:collapse;width:100%}}\ntd{{padding:.35rem .5rem;border-bottom:1px solid #e3e7ea}}\n\
         td.size{{text-align:right;white-space:nowrap}}\na{{color:#0b6bcb;text-decoration:none}}\n\
         a:hover{{text-decoration:underline}}\n</style>\n</head>\n<body>\n\
         <h1>Index of {title}</h1>\n<p class=\"cid\">{cid} &middot; {n} entries</p>\n<table>\n",
        title = escape(&title),
        cid = escape(dir_cid),
        n = entries.len(),
    );
    if !path.segments.is_empty() {
        let _ = writeln!(html, "<tr><td><a href=\"{}../\">..</a></td><td></td><td></td></tr>", escape(&base));
    }
    for e in entries {
        let href = format!("{base}{}", encode_segment(&e.name));
        let cid = e.cid.to_string();
        let size = e.tsize.map(human_size).unwrap_or_default();
        let _ = writeln!(
            html,
            "<tr><td><a href=\"{href}\">{name}</a></td><td class=\"cid\"><a href=\"/{ns}/{cid}?filename={fname}\">{cid}</a></td>\
             <td class=\"size\">{size}</td></tr>",
            href = escape(&href),
            name = escape(&e.name),
            ns = path.namespace,
            fname = escape(&urlencoding::encode(&e.name)),
        );
    }
    html.push_str("</table>\n</body>\n</html>\n");
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
        assert!(html.contains("href=\"/ipfs/bafkqaaa/sub/../\""));
        assert!(!html.contains("<b>&x"));
    }
}
