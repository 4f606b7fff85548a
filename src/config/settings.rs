//! Layered raw settings: the strings a user gave, keyed by long flag name,
//! each remembering where it came from (flag, environment or config file).
//!
//! The command line layer (flag, then environment) is filled by `cli`; the
//! config file layer is loaded here. [`Settings::layer_file`] only fills keys
//! the command line left unset, which is what gives the precedence
//! flag > environment > file > default.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::ConfigError;

/// Where a raw value came from; used to say exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Given on the command line.
    Flag,
    /// Read from this environment variable.
    Env(String),
    /// Read from this config file.
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => write!(f, "the command line"),
            Source::Env(var) => write!(f, "environment variable {var}"),
            Source::File(path) => write!(f, "config file {}", path.display()),
        }
    }
}

/// One option's raw values (one for plain flags, any number for repeatable ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub values: Vec<String>,
    pub source: Source,
}

/// What kind of value a flag takes, so the config file can be type-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--flag VALUE`; the file takes a string or number.
    Single,
    /// `--flag A --flag B` or `A,B`; the file takes a list or a single string.
    Repeated,
    /// `--flag`; the file takes `true` or `false`.
    Bool,
}

/// The raw settings for one subcommand, keyed by long flag name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, Setting>,
}

impl Settings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a value from the command line or environment (these win over the file).
    pub fn set(&mut self, flag: &str, values: Vec<String>, source: Source) {
        self.values
            .insert(flag.to_string(), Setting { values, source });
    }

    pub fn get(&self, flag: &str) -> Option<&Setting> {
        self.values.get(flag)
    }

    /// Adds a config file's keys under the ones already set. `known` lists
    /// every flag the subcommand accepts and the kind of value it takes.
    ///
    /// A missing file is an error only when `explicit` (named by `--config`
    /// or `RK3S_CONFIG_FILE`); the default path may simply not exist.
    pub fn layer_file(
        &mut self,
        path: &Path,
        explicit: bool,
        known: &BTreeMap<String, Kind>,
    ) -> Result<(), ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(()),
            Err(source) => {
                return Err(ConfigError::ReadFile {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        for (key, values) in parse_file(path, &text, known)? {
            self.values.entry(key).or_insert(Setting {
                values,
                source: Source::File(path.to_path_buf()),
            });
        }
        Ok(())
    }
}

/// Parses a config file's text into `(flag, values)` pairs, checking each key
/// against `known` and each value against the flag's kind.
fn parse_file(
    path: &Path,
    text: &str,
    known: &BTreeMap<String, Kind>,
) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|source| ConfigError::ParseFile {
            path: path.to_path_buf(),
            source,
        })?;
    let map = match doc {
        // An empty file (or one with only comments) configures nothing.
        serde_yaml::Value::Null => return Ok(Vec::new()),
        serde_yaml::Value::Mapping(map) => map,
        _ => {
            return Err(ConfigError::FileNotAMapping {
                path: path.to_path_buf(),
            })
        }
    };
    let wrong_type = |key: &str, expected: &str| ConfigError::FileWrongType {
        key: key.to_string(),
        path: path.to_path_buf(),
        expected: expected.to_string(),
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        let key = match key {
            serde_yaml::Value::String(key) => key,
            other => {
                return Err(ConfigError::FileUnknownKey {
                    key: scalar_text(&other).unwrap_or_else(|| format!("{other:?}")),
                    path: path.to_path_buf(),
                })
            }
        };
        let Some(kind) = known.get(&key) else {
            return Err(ConfigError::FileUnknownKey {
                key,
                path: path.to_path_buf(),
            });
        };
        let values = match (kind, &value) {
            (Kind::Bool, serde_yaml::Value::Bool(b)) => vec![b.to_string()],
            (Kind::Bool, _) => return Err(wrong_type(&key, "true or false")),
            (Kind::Repeated, serde_yaml::Value::Sequence(items)) => items
                .iter()
                .map(|item| scalar_text(item).ok_or_else(|| wrong_type(&key, "a list of strings")))
                .collect::<Result<_, _>>()?,
            (Kind::Repeated, v) => {
                let text = scalar_text(v)
                    .ok_or_else(|| wrong_type(&key, "a string or a list of strings"))?;
                // As on the command line, a single string may hold a comma-separated list.
                text.split(',').map(str::to_string).collect()
            }
            (Kind::Single, v) => {
                vec![scalar_text(v).ok_or_else(|| wrong_type(&key, "a single string or number"))?]
            }
        };
        out.push((key, values));
    }
    Ok(out)
}

/// The text of a YAML scalar (string, number or bool); `None` for lists, maps and null.
fn scalar_text(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeMap<String, Kind> {
        [
            ("cluster-cidr", Kind::Single),
            ("https-listen-port", Kind::Single),
            ("tls-san", Kind::Repeated),
            ("debug", Kind::Bool),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn parse(text: &str) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
        parse_file(Path::new("/etc/rk3s/config.yaml"), text, &known())
    }

    #[test]
    fn file_values_of_every_kind_parse() {
        let got = parse("cluster-cidr: 10.1.0.0/16\nhttps-listen-port: 7443\ntls-san: [a.example, 10.0.0.1]\ndebug: true\n").unwrap();
        assert_eq!(
            got,
            vec![
                ("cluster-cidr".into(), vec!["10.1.0.0/16".into()]),
                ("https-listen-port".into(), vec!["7443".into()]),
                (
                    "tls-san".into(),
                    vec!["a.example".into(), "10.0.0.1".into()]
                ),
                ("debug".into(), vec!["true".into()]),
            ]
        );
    }

    #[test]
    fn a_repeatable_key_takes_a_single_string() {
        let got = parse("tls-san: a.example,b.example\n").unwrap();
        assert_eq!(
            got[0].1,
            vec!["a.example".to_string(), "b.example".to_string()]
        );
    }

    #[test]
    fn empty_file_configures_nothing() {
        assert!(parse("# nothing here\n").unwrap().is_empty());
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = parse("clutser-cidr: 10.1.0.0/16\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("clutser-cidr"), "{err}");
        assert!(err.contains("/etc/rk3s/config.yaml"), "{err}");
    }

    #[test]
    fn wrong_types_are_refused() {
        for text in [
            "cluster-cidr: [a, b]\n",
            "debug: yes-please\n",
            "tls-san: {a: b}\n",
            "cluster-cidr:\n",
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.contains("/etc/rk3s/config.yaml") && err.contains("expected"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn file_never_overrides_command_line_and_missing_default_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "cluster-cidr: 10.1.0.0/16\nhttps-listen-port: 7443\n",
        )
        .unwrap();
        let mut settings = Settings::new();
        settings.set("cluster-cidr", vec!["10.9.0.0/16".into()], Source::Flag);
        settings.layer_file(&path, true, &known()).unwrap();
        assert_eq!(
            settings.get("cluster-cidr").unwrap().values,
            vec!["10.9.0.0/16".to_string()]
        );
        assert_eq!(
            settings.get("https-listen-port").unwrap().source,
            Source::File(path.clone())
        );

        let missing = dir.path().join("absent.yaml");
        Settings::new()
            .layer_file(&missing, false, &known())
            .unwrap();
        let err = Settings::new()
            .layer_file(&missing, true, &known())
            .unwrap_err();
        assert!(err.to_string().contains("absent.yaml"), "{err}");
    }
}
