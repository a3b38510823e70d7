//! `LINGXI__SECTION__KEY=value` environment overrides.
//!
//! The variable name, minus the `LINGXI__` prefix, is a path of `__`-separated,
//! case-insensitive keys; a numeric segment indexes an array
//! (`LINGXI__QUEUES__0__WRAPUP_SECS=10`). The config is serialised to a TOML value,
//! the key set there and the result deserialised back, so the schema (types, unknown
//! keys) is checked exactly as for a file.

use toml::Value;

use crate::{Config, ConfigError};

/// Prefix that marks a variable as a config override.
const PREFIX: &str = "LINGXI__";

impl Config {
    /// Applies `LINGXI__SECTION__KEY=value` overrides from `vars`, ignoring variables
    /// without the prefix. Each value is read as a TOML value (`5070`, `true`,
    /// `["pcma"]`) and, if that does not fit the key, as a plain string
    /// (`127.0.0.1:9000`). An unknown key or a value of the wrong type is an error
    /// naming the variable; on error `self` is left unchanged.
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(
        &mut self,
        vars: I,
    ) -> Result<(), ConfigError> {
        let mut config = self.clone();
        for (var, raw) in vars {
            let Some(rest) = var.strip_prefix(PREFIX) else {
                continue;
            };
            let err = |message: String| ConfigError::Env {
                var: var.clone(),
                message,
            };
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if path.iter().any(String::is_empty) {
                return Err(err(
                    "empty key segment (expected LINGXI__SECTION__KEY)".into()
                ));
            }
            let base = Value::try_from(&config)
                .map_err(|e| err(format!("cannot serialise current config: {e}")))?;
            let mut candidates = Vec::with_capacity(2);
            if let Some(v) = parse_toml_value(&raw) {
                candidates.push(v);
            }
            candidates.push(Value::String(raw.clone()));

            // Report why the TOML reading failed, not the string fallback: `70000`
            // for a u16 says more than "expected u16, found string".
            let mut first_error = None;
            let mut applied = false;
            for candidate in candidates {
                let mut root = base.clone();
                set_path(&mut root, &path, candidate).map_err(&err)?;
                match root.try_into::<Config>() {
                    Ok(mut next) => {
                        next.fill_defaults();
                        config = next;
                        applied = true;
                        break;
                    }
                    Err(e) => {
                        first_error.get_or_insert_with(|| e.message().trim_end().to_string());
                    }
                }
            }
            if !applied {
                let why = first_error.unwrap_or_default();
                return Err(err(format!("{}: {why}", path.join("."))));
            }
        }
        *self = config;
        Ok(())
    }
}

/// The process environment as UTF-8 pairs; a non-UTF-8 `LINGXI__…` variable is an
/// error, any other non-UTF-8 variable is none of our business.
pub(crate) fn process_vars() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if !key.starts_with(PREFIX) {
            continue;
        }
        let value = value.into_string().map_err(|_| ConfigError::Env {
            var: key.to_string(),
            message: "value is not valid UTF-8".into(),
        })?;
        vars.push((key.to_string(), value));
    }
    Ok(vars)
}

/// `raw` read as a TOML value, if it is one.
fn parse_toml_value(raw: &str) -> Option<Value> {
    let mut table: toml::Table = toml::from_str(&format!("v = {raw}")).ok()?;
    table.remove("v")
}

/// Sets `path` inside `root` to `value`, creating tables on the way (an unknown key
/// is then rejected when deserialising).
fn set_path(root: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("no key given".into());
    };
    let mut node = root;
    for (i, seg) in parents.iter().enumerate() {
        let here = path[..=i].join(".");
        node = match node {
            Value::Table(t) => t
                .entry(seg.clone())
                .or_insert_with(|| Value::Table(toml::Table::new())),
            Value::Array(a) => {
                let len = a.len();
                seg.parse::<usize>()
                    .ok()
                    .and_then(|idx| a.get_mut(idx))
                    .ok_or_else(|| format!("`{here}`: no such element (array has {len})"))?
            }
            _ => return Err(format!("`{}` is not a table", path[..i].join("."))),
        };
    }
    match node {
        Value::Table(t) => {
            t.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let len = a.len();
            let slot = last
                .parse::<usize>()
                .ok()
                .and_then(|idx| a.get_mut(idx))
                .ok_or_else(|| {
                    format!("`{}`: no such element (array has {len})", path.join("."))
                })?;
            *slot = value;
            Ok(())
        }
        _ => Err(format!("`{}` is not a table", parents.join("."))),
    }
}

#[cfg(test)]
mod tests;
