//! Typed configuration read once at start from the environment (12-factor).
//!
//! Every variable is declared as a [`Var`] so that `--help` can list it with its
//! default, and values are read through [`EnvSource`] so tests pass a map instead of
//! mutating the process environment.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Where configuration values come from.
pub trait EnvSource {
    fn get(&self, key: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// A fixed set, as tests give one: `Config::from_env(&[("JWT_SECRET", "…")])`.
impl<const N: usize> EnvSource for [(&str, &str); N] {
    fn get(&self, key: &str) -> Option<String> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v).to_owned())
    }
}

impl EnvSource for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

/// One environment variable: its name, default and what it is for.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    pub key: &'static str,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

impl Var {
    pub const fn new(key: &'static str, default: &'static str, help: &'static str) -> Self {
        Self { key, default: Some(default), help }
    }
    pub const fn optional(key: &'static str, help: &'static str) -> Self {
        Self { key, default: None, help }
    }
}

/// Every server's, the edge's too.
pub const SHUTDOWN_GRACE_SECONDS: Var =
    Var::new("SHUTDOWN_GRACE_SECONDS", "10", "on SIGTERM, how long in-flight requests get to finish");

/// Every configuration problem found; one problem is one line, several are a list.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [only] => write!(f, "invalid configuration: {only}"),
            problems => write!(f, "invalid configuration:\n  {}", problems.join("\n  ")),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads variables, collecting every problem so one start reports all of them.
pub struct EnvReader<'a> {
    source: &'a dyn EnvSource,
    problems: Vec<String>,
}

impl<'a> EnvReader<'a> {
    pub fn new(source: &'a dyn EnvSource) -> Self {
        Self { source, problems: Vec::new() }
    }

    /// The raw value, or the variable's default; empty counts as unset.
    pub fn raw(&self, var: &Var) -> Option<String> {
        self.source.get(var.key).filter(|v| !v.trim().is_empty()).or_else(|| var.default.map(str::to_owned))
    }

    pub fn string(&mut self, var: &Var) -> String {
        match self.raw(var) {
            Some(v) => v,
            None => {
                self.problems.push(format!("{} is required", var.key));
                String::new()
            }
        }
    }

    pub fn parse<T>(&mut self, var: &Var) -> Option<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let raw = self.raw(var)?;
        match raw.trim().parse() {
            Ok(v) => Some(v),
            Err(e) => {
                self.problems.push(format!("{}={raw:?}: {e}", var.key));
                None
            }
        }
    }

    /// A required, parsed value: a missing or bad one is recorded, and `fallback`
    /// keeps the reader going so every problem is reported at once.
    pub fn parse_or<T>(&mut self, var: &Var, fallback: T) -> T
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        if self.raw(var).is_none() {
            self.problems.push(format!("{} is required", var.key));
            return fallback;
        }
        self.parse(var).unwrap_or(fallback)
    }

    pub fn seconds(&mut self, var: &Var, fallback: u64) -> Duration {
        Duration::from_secs(self.parse_or(var, fallback))
    }

    pub fn flag(&mut self, var: &Var) -> bool {
        match self.raw(var).as_deref().map(str::trim) {
            None | Some("0") | Some("false") | Some("no") => false,
            Some("1") | Some("true") | Some("yes") => true,
            Some(other) => {
                self.problems.push(format!("{}={other:?}: expected 1/0 or true/false", var.key));
                false
            }
        }
    }

    pub fn problem(&mut self, message: String) {
        self.problems.push(message);
    }

    pub fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError(self.problems))
        }
    }
}

/// A secret value whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// True when the process was started with `--help` or `-h`.
pub fn help_requested() -> bool {
    std::env::args().skip(1).any(|a| a == "--help" || a == "-h")
}

/// The `--help` text: what the binary is and every variable with its default.
pub fn help_text(binary: &str, about: &str, vars: &[&[Var]]) -> String {
    let mut out = format!("{binary}: {about}\n\nConfiguration (environment variables):\n");
    for var in vars.iter().flat_map(|group| group.iter()) {
        let default = var.default.map_or_else(|| "(unset)".to_owned(), |d| format!("{d:?}"));
        out.push_str(&format!("  {:<24} default {default}\n      {}\n", var.key, var.help));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT: Var = Var::new("PORT", "8080", "port");
    const NEEDED: Var = Var::optional("NEEDED", "needed");

    #[test]
    fn defaults_apply_and_empty_counts_as_unset() {
        let source = [("PORT", "  ")];
        let mut reader = EnvReader::new(&source);
        assert_eq!(reader.parse_or(&PORT, 0u16), 8080);
        assert!(reader.finish(()).is_ok());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let source = [("PORT", "eighty")];
        let mut reader = EnvReader::new(&source);
        reader.parse_or(&PORT, 0u16);
        reader.string(&NEEDED);
        let err = reader.finish(()).unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        assert!(err.to_string().contains("PORT=\"eighty\""));
        assert!(err.to_string().contains("NEEDED is required"));
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret([redacted])");
    }

    #[test]
    fn help_lists_every_variable_with_default() {
        let text = help_text("svc", "does things", &[&[PORT, NEEDED]]);
        assert!(text.contains("PORT") && text.contains("\"8080\""));
        assert!(text.contains("NEEDED") && text.contains("(unset)"));
    }
}
