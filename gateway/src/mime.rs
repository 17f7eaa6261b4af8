//! `Content-Type` for files: by the name's extension first, then by sniffing the first bytes (a subset of
//! the WHATWG MIME sniffing rules, the same signatures Go's `http.DetectContentType` uses).

/// How many leading bytes sniffing looks at.
pub const SNIFF_LEN: usize = 512;

/// The type for a file name's extension, if it is one browsers need told.
pub fn by_extension(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "text/xml; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        _ => return None,
    })
}

/// Guesses a file's type from its first bytes; `complete` says they are the whole file, which lets a small
/// JSON document be recognised as `application/json` (text that merely starts with `{` is not enough).
pub fn sniff_file(data: &[u8], complete: bool) -> &'static str {
    let kind = sniff(data);
    let trimmed = trim_ws(data);
    if complete
        && kind.starts_with("text/plain")
        && matches!(trimmed.first(), Some(b'{' | b'['))
        && serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok()
    {
        return "application/json";
    }
    kind
}

/// Guesses a type from a file's first bytes.
pub fn sniff(data: &[u8]) -> &'static str {
    let data = &data[..data.len().min(SNIFF_LEN)];
    const EXACT: &[(&[u8], &str)] = &[
        (b"%PDF-", "application/pdf"),
        (b"%!PS-Adobe-", "application/postscript"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"BM", "image/bmp"),
        (b"\x00asm", "application/wasm"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1f\x8b\x08", "application/x-gzip"),
        (b"Rar!\x1a\x07", "application/x-rar-compressed"),
        (b"OggS\x00", "application/ogg"),
        (b"\x1aE\xdf\xa3", "video/webm"),
        (b"wOFF", "font/woff"),
        (b"wOF2", "font/woff2"),
        (b"\xfe\xff", "text/plain; charset=utf-16be"),
        (b"\xff\xfe", "text/plain; charset=utf-16le"),
        (b"\xef\xbb\xbf", "text/plain; charset=utf-8"),
    ];
    for (magic, kind) in EXACT {
        if data.starts_with(magic) {
            return kind;
        }
    }
    if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        return "image/webp";
    }
    if data.len() >= 12 && &data[4..8] == b"ftyp" {
        return "video/mp4";
    }
    let trimmed = trim_ws(data);
    if is_html(trimmed) {
        return "text/html; charset=utf-8";
    }
    if starts_with_ci(trimmed, b"<?xml") {
        return if contains_ci(trimmed, b"<svg") { "image/svg+xml" } else { "text/xml; charset=utf-8" };
    }
    if starts_with_ci(trimmed, b"<svg") {
        return "image/svg+xml";
    }
    if data.iter().any(|&b| matches!(b, 0x00..=0x08 | 0x0b | 0x0e..=0x1a | 0x1c..=0x1f)) {
        return "application/octet-stream";
    }
    "text/plain; charset=utf-8"
}

fn trim_ws(data: &[u8]) -> &[u8] {
    let start = data.iter().position(|b| !matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')).unwrap_or(data.len());
    &data[start..]
}

fn starts_with_ci(data: &[u8], prefix: &[u8]) -> bool {
    data.len() >= prefix.len() && data[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn contains_ci(data: &[u8], needle: &[u8]) -> bool {
    data.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

fn is_html(data: &[u8]) -> bool {
    const TAGS: &[&[u8]] = &[
        b"<!DOCTYPE HTML",
        b"<HTML",
        b"<HEAD",
        b"<SCRIPT",
        b"<IFRAME",
        b"<H1",
        b"<DIV",
        b"<FONT",
        b"<TABLE",
        b"<A",
        b"<STYLE",
        b"<TITLE",
        b"<B",
        b"<BODY",
        b"<BR",
        b"<P",
        b"<!--",
    ];
    TAGS.iter().any(|tag| {
        starts_with_ci(data, tag) && data.get(tag.len()).is_some_and(|&b| b == b' ' || b == b'>' || tag == b"<!--")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_then_sniffing() {
        assert_eq!(by_extension("index.HTML"), Some("text/html; charset=utf-8"));
        assert_eq!(by_extension("noext"), None);
        assert_eq!(sniff(b"  <!doctype html><p>hi"), "text/html; charset=utf-8");
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), "image/png");
        assert_eq!(sniff(b"hello world\n"), "text/plain; charset=utf-8");
        assert_eq!(sniff(&[0, 1, 2, 3]), "application/octet-stream");
        assert_eq!(sniff_file(b"{ \"a\": 1 }\n", true), "application/json");
        assert_eq!(sniff_file(b"{ \"a\": 1 }\n", false), "text/plain; charset=utf-8");
        assert_eq!(sniff_file(b"{ not json", true), "text/plain; charset=utf-8");
        assert_eq!(sniff(b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>"), "image/svg+xml");
    }
}
