//! Query-string arguments as kubo's command parser reads them: every `arg=` value is a positional
//! argument, in order; other keys are options, each with a long and maybe a short name (`quiet`, `q`).
//! Booleans follow Go's `strconv.ParseBool` (case-insensitive), and an empty value means true. Unknown
//! options are ignored, as kubo ignores them.

use axum::http::Uri;

use super::ApiError;

/// The parsed query of one request.
#[derive(Debug, Default)]
pub(crate) struct Args {
    args: Vec<String>,
    opts: Vec<(String, String)>,
}

impl Args {
    pub(crate) fn from_uri(uri: &Uri) -> Result<Self, ApiError> {
        Self::parse(uri.query().unwrap_or(""))
    }

    pub(crate) fn parse(query: &str) -> Result<Self, ApiError> {
        let mut out = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (unescape(k)?, unescape(v)?);
            if k == "arg" {
                out.args.push(v);
            } else {
                out.opts.push((k, v));
            }
        }
        Ok(out)
    }

    /// All positional arguments.
    pub(crate) fn args(&self) -> &[String] {
        &self.args
    }

    /// The first positional argument, which the command requires.
    pub(crate) fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.args.first().map(String::as_str).ok_or_else(|| missing(name))
    }

    /// All positional arguments, of which the command requires at least one.
    pub(crate) fn required_all(&self, name: &str) -> Result<&[String], ApiError> {
        if self.args.is_empty() { Err(missing(name)) } else { Ok(&self.args) }
    }

    /// The value of a single-valued option known by any of `names`.
    pub(crate) fn string(&self, names: &[&str]) -> Result<Option<&str>, ApiError> {
        let mut found = self.opts.iter().filter(|(k, _)| names.contains(&k.as_str()));
        let first = found.next();
        if found.next().is_some() {
            return Err(ApiError::bad_request(format!("expected key {} to have only a single value", names[0])));
        }
        Ok(first.map(|(_, v)| v.as_str()))
    }

    pub(crate) fn opt_bool(&self, names: &[&str]) -> Result<Option<bool>, ApiError> {
        self.string(names)?
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "" | "1" | "t" | "true" => Ok(true),
                "0" | "f" | "false" => Ok(false),
                _ => Err(bad_value(names[0], v, "bool")),
            })
            .transpose()
    }

    pub(crate) fn bool(&self, names: &[&str], default: bool) -> Result<bool, ApiError> {
        Ok(self.opt_bool(names)?.unwrap_or(default))
    }

    pub(crate) fn i64(&self, names: &[&str]) -> Result<Option<i64>, ApiError> {
        self.string(names)?.map(|v| v.parse().map_err(|_| bad_value(names[0], v, "int64"))).transpose()
    }

    pub(crate) fn u64(&self, names: &[&str]) -> Result<Option<u64>, ApiError> {
        self.string(names)?.map(|v| v.parse().map_err(|_| bad_value(names[0], v, "uint64"))).transpose()
    }
}

fn missing(name: &str) -> ApiError {
    ApiError::bad_request(format!("argument {name:?} is required"))
}

fn bad_value(option: &str, value: &str, kind: &str) -> ApiError {
    ApiError::bad_request(format!("could not convert value {value:?} to type {kind} (for option {option:?})"))
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte, and the result must be UTF-8.
fn unescape(s: &str) -> Result<String, ApiError> {
    let spaced = s.replace('+', " ");
    urlencoding::decode(&spaced)
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::bad_request(format!("invalid query string: {s:?} is not valid UTF-8 once decoded")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_args_keep_their_order_and_options_their_names() {
        let a = Args::parse("arg=b&quiet&arg=%2Fipfs%2Fa+b&cid-version=1&t=false&pin=TRUE").expect("parses");
        assert_eq!(a.args(), ["b", "/ipfs/a b"]);
        assert!(a.bool(&["quiet", "q"], false).expect("bool"), "an empty value is true");
        assert_eq!(a.opt_bool(&["trickle", "t"]).expect("bool"), Some(false), "short name");
        assert!(a.bool(&["pin"], false).expect("bool"), "case-insensitive");
        assert_eq!(a.u64(&["cid-version"]).expect("u64"), Some(1));
        assert_eq!(a.opt_bool(&["absent"]).expect("bool"), None);
    }

    #[test]
    fn bad_values_are_client_errors() {
        let a = Args::parse("pin=maybe&offset=x&arg=1&q=1&quiet=1").expect("parses");
        for err in [
            a.bool(&["pin"], true).expect_err("bool"),
            a.i64(&["offset"]).expect_err("int"),
            a.bool(&["quiet", "q"], false).expect_err("given twice"),
        ] {
            assert!(matches!(err, ApiError::BadRequest(_)), "{err:?}");
        }
        let none = Args::parse("").expect("parses");
        assert_eq!(none.required("ipfs-path").expect_err("missing").message(), r#"argument "ipfs-path" is required"#);
    }
}
