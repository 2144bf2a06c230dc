//! Settings from the environment and a `.env` file, for the `replicator`
//! example: `KEY=VALUE` lines, `#` comments, an optional `export ` and
//! quotes around the value. The environment wins over the file.

use std::collections::HashMap;
use std::path::Path;

/// Settings read from the environment, then from a `.env` file.
pub struct Settings {
    file: HashMap<String, String>,
}

impl Settings {
    /// Reads `path` if it exists (a missing file is no error).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(Self {
            file: parse(&text)
                .map_err(|line| format!("{} line {line} is not KEY=VALUE", path.display()))?,
        })
    }

    /// The value of `key`: the environment's, else the file's.
    pub fn get(&self, key: &str) -> Option<String> {
        std::env::var(key)
            .ok()
            .or_else(|| self.file.get(key).cloned())
    }

    /// The value of `key`, or an error naming it.
    pub fn required(&self, key: &str) -> Result<String, String> {
        self.get(key)
            .ok_or_else(|| format!("set {key} in the environment or in .env"))
    }

    /// The value of `key` parsed, `default` when unset.
    pub fn parsed<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.get(key) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("{key} is not valid: {text:?}")),
        }
    }
}

/// The `KEY=VALUE` pairs of a `.env` text; the number of the first bad
/// line on error.
fn parse(text: &str) -> Result<HashMap<String, String>, usize> {
    let mut values = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line.split_once('=').ok_or(index + 1)?;
        let key = key.trim();
        if key.is_empty() {
            return Err(index + 1);
        }
        let value = value.trim();
        let value = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(open, close)| {
                value
                    .strip_prefix(*open)
                    .and_then(|v| v.strip_suffix(*close))
            })
            .unwrap_or(value);
        values.insert(key.to_owned(), value.to_owned());
    }
    Ok(values)
}
