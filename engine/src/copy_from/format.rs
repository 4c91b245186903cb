//! The options of `COPY … FROM`: PostgreSQL's `text`, `csv` and `binary`
//! formats and their settings, in the new `WITH (…)` syntax and the legacy
//! one psql's `\copy … csv header` sends.

use datafusion::sql::sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption, Ident};

use crate::sqlstate::{PgError, SqlState};

/// How the rows of a `COPY … FROM` are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFormat {
    /// PostgreSQL's text format: delimited lines, backslash escapes.
    Text(Delimited),
    /// CSV.
    Csv(Delimited),
    /// PostgreSQL's binary format (`PGCOPY`).
    Binary,
}

/// The settings of the text and CSV formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delimited {
    /// The field separator (one byte).
    pub delimiter: u8,
    /// The text that stands for NULL (unquoted, in CSV).
    pub null: Vec<u8>,
    /// Whether the first line is a header, skipped.
    pub header: bool,
    /// CSV's quote byte.
    pub quote: u8,
    /// CSV's escape byte inside quotes.
    pub escape: u8,
    /// Columns whose quoted values matching `null` are NULL too (CSV).
    pub force_null: Vec<String>,
}

impl Delimited {
    fn text() -> Self {
        Self {
            delimiter: b'\t',
            null: b"\\N".to_vec(),
            header: false,
            quote: b'"',
            escape: b'"',
            force_null: Vec::new(),
        }
    }

    fn csv() -> Self {
        Self {
            delimiter: b',',
            null: Vec::new(),
            ..Self::text()
        }
    }
}

/// What the statement's options ask for, before they are checked together.
#[derive(Default)]
struct Requested {
    format: Option<String>,
    delimiter: Option<char>,
    null: Option<String>,
    header: Option<bool>,
    quote: Option<char>,
    escape: Option<char>,
    force_null: Option<Vec<Ident>>,
}

fn invalid(message: impl Into<String>) -> PgError {
    PgError::new(SqlState::SYNTAX_ERROR, message)
}

/// One ASCII byte of option `what`.
fn single_byte(what: &str, value: char) -> Result<u8, PgError> {
    u8::try_from(value)
        .ok()
        .filter(u8::is_ascii)
        .ok_or_else(|| {
            PgError::new(
                SqlState::FEATURE_NOT_SUPPORTED,
                format!("COPY {what} must be a single one-byte character"),
            )
        })
}

impl CopyFormat {
    /// The format `options` and `legacy` (as sqlparser reads a `COPY`)
    /// describe.
    pub fn new(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<Self, PgError> {
        let mut requested = Requested::default();
        for option in options {
            match option {
                CopyOption::Format(name) => requested.format = Some(name.value.to_lowercase()),
                CopyOption::Delimiter(c) => requested.delimiter = Some(*c),
                CopyOption::Null(text) => requested.null = Some(text.clone()),
                CopyOption::Header(on) => requested.header = Some(*on),
                CopyOption::Quote(c) => requested.quote = Some(*c),
                CopyOption::Escape(c) => requested.escape = Some(*c),
                CopyOption::ForceNull(columns) => requested.force_null = Some(columns.clone()),
                // UTF-8 is the only encoding; FREEZE changes nothing here.
                CopyOption::Encoding(_) | CopyOption::Freeze(_) => {}
                other => {
                    return Err(PgError::new(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        format!("COPY FROM does not support option {other}"),
                    ))
                }
            }
        }
        for option in legacy {
            match option {
                CopyLegacyOption::Binary => requested.format = Some("binary".into()),
                CopyLegacyOption::Delimiter(c) => requested.delimiter = Some(*c),
                CopyLegacyOption::Null(text) => requested.null = Some(text.clone()),
                CopyLegacyOption::Csv(csv) => {
                    requested.format = Some("csv".into());
                    for option in csv {
                        match option {
                            CopyLegacyCsvOption::Header => requested.header = Some(true),
                            CopyLegacyCsvOption::Quote(c) => requested.quote = Some(*c),
                            CopyLegacyCsvOption::Escape(c) => requested.escape = Some(*c),
                            other => {
                                return Err(PgError::new(
                                    SqlState::FEATURE_NOT_SUPPORTED,
                                    format!("COPY FROM does not support option {other}"),
                                ))
                            }
                        }
                    }
                }
                other => {
                    return Err(PgError::new(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        format!("COPY FROM does not support option {other}"),
                    ))
                }
            }
        }
        requested.check()
    }
}

impl Requested {
    fn check(self) -> Result<CopyFormat, PgError> {
        let format = self.format.unwrap_or_else(|| "text".into());
        let mut delimited = match format.as_str() {
            "text" => Delimited::text(),
            "csv" => Delimited::csv(),
            "binary" => {
                for (given, name) in [
                    (self.delimiter.is_some(), "DELIMITER"),
                    (self.null.is_some(), "NULL"),
                ] {
                    if given {
                        return Err(invalid(format!("cannot specify {name} in BINARY mode")));
                    }
                }
                if self.header.is_some() {
                    return Err(PgError::new(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        "cannot specify HEADER in BINARY mode",
                    ));
                }
                return Ok(CopyFormat::Binary);
            }
            other => {
                return Err(PgError::new(
                    SqlState::INVALID_PARAMETER_VALUE,
                    format!("COPY format \"{other}\" not recognized"),
                ))
            }
        };
        let csv = format == "csv";
        if !csv {
            for (given, name) in [
                (self.quote.is_some(), "COPY QUOTE"),
                (self.escape.is_some(), "COPY ESCAPE"),
                (self.force_null.is_some(), "COPY FORCE_NULL"),
            ] {
                if given {
                    return Err(PgError::new(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        format!("{name} requires CSV mode"),
                    ));
                }
            }
        }
        if let Some(delimiter) = self.delimiter {
            delimited.delimiter = single_byte("delimiter", delimiter)?;
        }
        if let Some(null) = self.null {
            delimited.null = null.into_bytes();
        }
        delimited.header = self.header.unwrap_or(false);
        if let Some(quote) = self.quote {
            delimited.quote = single_byte("quote", quote)?;
            delimited.escape = delimited.quote;
        }
        if let Some(escape) = self.escape {
            delimited.escape = single_byte("escape", escape)?;
        }
        if csv && delimited.delimiter == delimited.quote {
            return Err(PgError::new(
                SqlState::INVALID_PARAMETER_VALUE,
                "COPY delimiter and quote must be different",
            ));
        }
        if matches!(delimited.delimiter, b'\r' | b'\n') || (!csv && delimited.delimiter == b'\\') {
            return Err(PgError::new(
                SqlState::INVALID_PARAMETER_VALUE,
                format!(
                    "COPY delimiter cannot be \"{}\"",
                    (delimited.delimiter as char).escape_default()
                ),
            ));
        }
        delimited.force_null = self
            .force_null
            .unwrap_or_default()
            .iter()
            .map(|ident| match ident.quote_style {
                Some(_) => ident.value.clone(),
                None => ident.value.to_lowercase(),
            })
            .collect();
        Ok(if csv {
            CopyFormat::Csv(delimited)
        } else {
            CopyFormat::Text(delimited)
        })
    }
}
