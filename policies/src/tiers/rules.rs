//! One tier's compiled match rules: every rule given must hold, any value within one.

use super::config::MatchConfig;
use super::request::RequestView;
use super::source_set::SourceSet;
use crate::PoliciesConfigError;

/// Rules ready to run: names lower-cased, methods upper-cased, sources parsed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rules {
    headers: Vec<(String, HeaderMatch)>,
    path_prefix: Vec<String>,
    route: Vec<String>,
    methods: Vec<String>,
    sources: SourceSet,
}

#[derive(Clone, Debug)]
enum HeaderMatch {
    /// `*`: present with any value.
    Present,
    Exact(Vec<u8>),
}

// === impl Rules ===

impl Rules {
    /// Compiles `cfg`; `at` is its config path for errors (`tiers.list[2].match`).
    pub(crate) fn compile(cfg: &MatchConfig, at: &str) -> Result<Self, PoliciesConfigError> {
        let mut headers = Vec::with_capacity(cfg.headers.len());
        for (name, value) in &cfg.headers {
            let name = header_name(name)
                .map_err(|r| PoliciesConfigError::new(format!("{at}.headers"), r))?;
            let m = if value == "*" {
                HeaderMatch::Present
            } else {
                HeaderMatch::Exact(value.as_bytes().to_vec())
            };
            headers.push((name, m));
        }
        for (i, p) in cfg.path_prefix.iter().enumerate() {
            if !p.starts_with('/') {
                return Err(PoliciesConfigError::new(
                    format!("{at}.path_prefix[{i}]"),
                    format!("{p:?} must start with '/'"),
                ));
            }
        }
        for (i, r) in cfg.route.iter().enumerate() {
            if !r.starts_with('/') {
                return Err(PoliciesConfigError::new(
                    format!("{at}.route[{i}]"),
                    format!("{r:?} must start with '/'"),
                ));
            }
        }
        let mut methods = Vec::with_capacity(cfg.methods.len());
        for (i, m) in cfg.methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
                return Err(PoliciesConfigError::new(
                    format!("{at}.methods[{i}]"),
                    format!("{m:?} is not an HTTP method"),
                ));
            }
            methods.push(m.to_ascii_uppercase());
        }
        let sources = SourceSet::parse(&cfg.sources)
            .map_err(|(i, r)| PoliciesConfigError::new(format!("{at}.sources[{i}]"), r))?;
        Ok(Self {
            headers,
            path_prefix: cfg.path_prefix.clone(),
            route: cfg.route.clone(),
            methods,
            sources,
        })
    }

    /// A tier with no rules matches nothing by rule.
    pub(crate) fn is_empty(&self) -> bool {
        self.headers.is_empty()
            && self.path_prefix.is_empty()
            && self.route.is_empty()
            && self.methods.is_empty()
            && self.sources.is_empty()
    }

    /// Whether every rule given holds for `req`.
    pub(crate) fn matches<R: RequestView + ?Sized>(&self, req: &R) -> bool {
        if self.is_empty() {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == req.method()) {
            return false;
        }
        if !self.path_prefix.is_empty() {
            let path = req.path();
            if !self
                .path_prefix
                .iter()
                .any(|p| path.starts_with(p.as_str()))
            {
                return false;
            }
        }
        if !self.route.is_empty() {
            match req.route() {
                Some(r) if self.route.iter().any(|t| t == r) => {}
                _ => return false,
            }
        }
        if !self.sources.is_empty() && !self.sources.contains(req.source(), req.client_ip()) {
            return false;
        }
        self.headers
            .iter()
            .all(|(name, m)| match (req.header(name), m) {
                (Some(_), HeaderMatch::Present) => true,
                (Some(v), HeaderMatch::Exact(want)) => v == want.as_slice(),
                (None, _) => false,
            })
    }
}

/// A header name lower-cased, or why it is not one (RFC 9110 token characters).
pub(crate) fn header_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(format!("{name:?} is not a header name"))
    }
}
