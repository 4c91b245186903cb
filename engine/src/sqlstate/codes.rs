//! The SQLSTATE codes Sluice raises, named as in PostgreSQL's Appendix A.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A five-character SQLSTATE code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState([u8; 5]);

impl SqlState {
    /// The code of `text`, five digits or upper-case letters.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes: [u8; 5] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            .then_some(Self(bytes))
    }

    /// The code, e.g. `"22012"`.
    pub fn code(&self) -> &str {
        // Built only from ASCII (`parse` and the constants below).
        std::str::from_utf8(&self.0).unwrap_or("XX000")
    }

    /// A constant from its code; the constants below are checked by a test.
    const fn of(code: &str) -> Self {
        let b = code.as_bytes();
        Self([b[0], b[1], b[2], b[3], b[4]])
    }

    /// `00000` successful_completion (the code of a NOTICE).
    pub const SUCCESSFUL_COMPLETION: Self = Self::of("00000");
    /// `08006` connection_failure: the scheduler or an executor cannot be
    /// reached.
    pub const CONNECTION_FAILURE: Self = Self::of("08006");
    /// `08P01` protocol_violation.
    pub const PROTOCOL_VIOLATION: Self = Self::of("08P01");
    /// `0A000` feature_not_supported.
    pub const FEATURE_NOT_SUPPORTED: Self = Self::of("0A000");
    /// `22003` numeric_value_out_of_range.
    pub const NUMERIC_VALUE_OUT_OF_RANGE: Self = Self::of("22003");
    /// `22021` character_not_in_repertoire: bytes that are not UTF-8.
    pub const CHARACTER_NOT_IN_REPERTOIRE: Self = Self::of("22021");
    /// `22P03` invalid_binary_representation: a binary value of the wrong
    /// size or form.
    pub const INVALID_BINARY_REPRESENTATION: Self = Self::of("22P03");
    /// `22P04` bad_copy_file_format: COPY data that does not follow its
    /// format (missing or extra columns, an unterminated quoted field).
    pub const BAD_COPY_FILE_FORMAT: Self = Self::of("22P04");
    /// `23502` not_null_violation.
    pub const NOT_NULL_VIOLATION: Self = Self::of("23502");
    /// `22012` division_by_zero.
    pub const DIVISION_BY_ZERO: Self = Self::of("22012");
    /// `22023` invalid_parameter_value: a setting given a value it cannot
    /// take.
    pub const INVALID_PARAMETER_VALUE: Self = Self::of("22023");
    /// `22P02` invalid_text_representation: a value that does not parse as
    /// its type.
    pub const INVALID_TEXT_REPRESENTATION: Self = Self::of("22P02");
    /// `26000` invalid_sql_statement_name: an unknown prepared statement.
    pub const INVALID_SQL_STATEMENT_NAME: Self = Self::of("26000");
    /// `28000` invalid_authorization_specification.
    pub const INVALID_AUTHORIZATION: Self = Self::of("28000");
    /// `28P01` invalid_password.
    pub const INVALID_PASSWORD: Self = Self::of("28P01");
    /// `34000` invalid_cursor_name.
    pub const INVALID_CURSOR_NAME: Self = Self::of("34000");
    /// `25P02` in_failed_sql_transaction: a statement other than `COMMIT`
    /// or `ROLLBACK` in a transaction block an error ended.
    pub const IN_FAILED_SQL_TRANSACTION: Self = Self::of("25P02");
    /// `2BP01` dependent_objects_still_exist: a schema dropped with its
    /// tables, without CASCADE.
    pub const DEPENDENT_OBJECTS_STILL_EXIST: Self = Self::of("2BP01");
    /// `3D000` invalid_catalog_name: an unknown database.
    pub const INVALID_CATALOG_NAME: Self = Self::of("3D000");
    /// `3F000` invalid_schema_name.
    pub const INVALID_SCHEMA_NAME: Self = Self::of("3F000");
    /// `40001` serialization_failure: the query could not finish and may be
    /// run again (rows had already been sent when an executor's work was
    /// lost).
    pub const SERIALIZATION_FAILURE: Self = Self::of("40001");
    /// `42000` syntax_error_or_access_rule_violation: other planning errors.
    pub const SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION: Self = Self::of("42000");
    /// `42501` insufficient_privilege.
    pub const INSUFFICIENT_PRIVILEGE: Self = Self::of("42501");
    /// `42601` syntax_error.
    pub const SYNTAX_ERROR: Self = Self::of("42601");
    /// `42702` ambiguous_column.
    pub const AMBIGUOUS_COLUMN: Self = Self::of("42702");
    /// `42703` undefined_column.
    pub const UNDEFINED_COLUMN: Self = Self::of("42703");
    /// `42704` undefined_object: an unknown setting.
    pub const UNDEFINED_OBJECT: Self = Self::of("42704");
    /// `42883` undefined_function.
    pub const UNDEFINED_FUNCTION: Self = Self::of("42883");
    /// `42P01` undefined_table.
    pub const UNDEFINED_TABLE: Self = Self::of("42P01");
    /// `42P03` duplicate_cursor.
    pub const DUPLICATE_CURSOR: Self = Self::of("42P03");
    /// `42P06` duplicate_schema.
    pub const DUPLICATE_SCHEMA: Self = Self::of("42P06");
    /// `42P07` duplicate_table.
    pub const DUPLICATE_TABLE: Self = Self::of("42P07");
    /// `53200` out_of_memory.
    pub const OUT_OF_MEMORY: Self = Self::of("53200");
    /// `53300` too_many_connections.
    pub const TOO_MANY_CONNECTIONS: Self = Self::of("53300");
    /// `54000` program_limit_exceeded: a value or statement over the
    /// server's limits.
    pub const PROGRAM_LIMIT_EXCEEDED: Self = Self::of("54000");
    /// `54001` statement_too_complex.
    pub const STATEMENT_TOO_COMPLEX: Self = Self::of("54001");
    /// `55000` object_not_in_prerequisite_state.
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: Self = Self::of("55000");
    /// `55P02` cant_change_runtime_param.
    pub const CANT_CHANGE_RUNTIME_PARAM: Self = Self::of("55P02");
    /// `57014` query_canceled.
    pub const QUERY_CANCELED: Self = Self::of("57014");
    /// `58030` io_error.
    pub const IO_ERROR: Self = Self::of("58030");
    /// `58P01` undefined_file: a table location that does not exist.
    pub const UNDEFINED_FILE: Self = Self::of("58P01");
    /// `P0001` raise_exception: a job that `CALL sluice.run_job` ran failed.
    pub const RAISE_EXCEPTION: Self = Self::of("P0001");
    /// `XX000` internal_error: only for real internal errors.
    pub const INTERNAL_ERROR: Self = Self::of("XX000");
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SqlState({})", self.code())
    }
}

impl Serialize for SqlState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for SqlState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a SQLSTATE")))
    }
}
