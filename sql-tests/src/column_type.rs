//! The column types a `query` record names, one letter per column, checked
//! against the types the server describes for the statement.

use sqllogictest::ColumnType;
use tokio_postgres::types::Type;

/// The type of one result column, as an slt file spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SltColumnType {
    /// `I`: int2, int4, int8, oid.
    Integer,
    /// `R`: float4, float8, numeric.
    Real,
    /// `T`: text, varchar, char, name.
    Text,
    /// `B`: bool.
    Boolean,
    /// `D`: date, time, timestamp, timestamptz, interval.
    DateTime,
    /// `?`: anything else (arrays, bytea, json, …).
    Other,
}

impl SltColumnType {
    /// The slt type of a column the server describes as `pg_type`.
    pub fn of(pg_type: &Type) -> Self {
        match *pg_type {
            Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => Self::Integer,
            Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => Self::Real,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR => Self::Text,
            Type::BOOL => Self::Boolean,
            Type::DATE | Type::TIME | Type::TIMESTAMP | Type::TIMESTAMPTZ | Type::INTERVAL => {
                Self::DateTime
            }
            _ => Self::Other,
        }
    }
}

impl ColumnType for SltColumnType {
    /// `None` for a letter no type has, so a typo fails the file's parse.
    fn from_char(value: char) -> Option<Self> {
        Some(match value {
            'I' => Self::Integer,
            'R' => Self::Real,
            'T' => Self::Text,
            'B' => Self::Boolean,
            'D' => Self::DateTime,
            '?' => Self::Other,
            _ => return None,
        })
    }

    fn to_char(&self) -> char {
        match self {
            Self::Integer => 'I',
            Self::Real => 'R',
            Self::Text => 'T',
            Self::Boolean => 'B',
            Self::DateTime => 'D',
            Self::Other => '?',
        }
    }
}
