//! One declaration per setting. A role's flags struct is also its section
//! of the config file: each field is declared once, with its flag and
//! environment variable (clap), its file key (serde, the field's name in
//! kebab case), and its default and meaning in its doc comment (clap's help,
//! which README's tables are checked against). [`layered`] puts the flags
//! and environment over the file, field by field.

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::{Result, ServerError};

/// `flags` (the command line and environment) over `file` (the config
/// file's section): each field set in `flags` (not absent, `false` or an
/// empty list) wins; the others come from `file`.
pub(super) fn layered<T: Serialize + DeserializeOwned>(flags: &T, file: &T) -> Result<T> {
    let failed = |e: serde_json::Error| ServerError::Config(format!("merging settings: {e}"));
    let mut merged = serde_json::to_value(file).map_err(failed)?;
    let Value::Object(flags) = serde_json::to_value(flags).map_err(failed)? else {
        return Err(ServerError::Config("settings are not a table".into()));
    };
    if let Value::Object(merged) = &mut merged {
        for (key, value) in flags {
            let unset = match &value {
                Value::Null | Value::Bool(false) => true,
                Value::Array(items) => items.is_empty(),
                _ => false,
            };
            if !unset {
                merged.insert(key, value);
            }
        }
    }
    serde_json::from_value(merged).map_err(failed)
}

/// A size in bytes: a number, or one with a unit (`512MiB`, `2GB`), on the
/// command line and in the file alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        text.trim()
            .parse::<bytesize::ByteSize>()
            .map(|size| Self(size.as_u64()))
            .map_err(|e| format!("{text:?} is not a size (like 512MiB or 2GB): {e}"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        /// A size as the file may write it.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bytes(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Bytes(bytes) => Ok(Self(bytes)),
            Written::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Settings {
        name: Option<String>,
        size: Option<Size>,
        on: bool,
        list: Vec<String>,
    }

    #[test]
    fn flags_win_where_they_are_set() {
        let file = Settings {
            name: Some("file".into()),
            size: Some(Size(1)),
            on: true,
            list: vec!["a".into()],
        };
        let flags = Settings {
            size: Some(Size(2)),
            ..Settings::default()
        };
        let merged = layered(&flags, &file).unwrap();
        assert_eq!(
            merged,
            Settings {
                size: Some(Size(2)),
                ..file
            }
        );
    }

    #[test]
    fn sizes_read_numbers_and_units() {
        let settings: Settings = toml::from_str("size = \"2KiB\"").unwrap();
        assert_eq!(settings.size, Some(Size(2048)));
        let settings: Settings = toml::from_str("size = 7").unwrap();
        assert_eq!(settings.size, Some(Size(7)));
        assert!(toml::from_str::<Settings>("size = \"lots\"").is_err());
    }
}
