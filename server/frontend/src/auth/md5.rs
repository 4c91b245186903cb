//! PostgreSQL's md5 password authentication, for clients too old for SCRAM.
//! Off unless the server allows it (`allow-md5`): the stored hash,
//! `md5(password || user)`, is enough to log in as the user, and the
//! exchange can be replayed by whoever records it without TLS.
//!
//! The stored form is PostgreSQL's: `md5` followed by 32 hex digits. The
//! client answers a 4-byte salt with `md5` + hex(md5(hex(stored) || salt)).

use std::fmt;

use md5::{Digest, Md5};

/// Prefix of stored md5 passwords and of client answers.
const PREFIX: &str = "md5";

/// A user's stored md5 password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Password {
    /// hex(md5(password || user)), 32 lowercase digits.
    hex: String,
}

impl fmt::Debug for Md5Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash logs in as the user: keep it out of logs.
        f.write_str("Md5Password(…)")
    }
}

impl fmt::Display for Md5Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex)
    }
}

/// Lowercase hex of md5 over `parts`, concatenated.
fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

impl Md5Password {
    /// The stored hash of `password` for `user`.
    pub fn new(user: &str, password: &str) -> Self {
        Self {
            hex: md5_hex(&[password.as_bytes(), user.as_bytes()]),
        }
    }

    /// Reads PostgreSQL's stored form, `md5` and 32 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix(PREFIX)?;
        (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self {
            hex: hex.to_ascii_lowercase(),
        })
    }

    /// Whether `answer` (the client's password message) proves knowledge
    /// of the password for `salt`.
    pub fn accepts(&self, salt: [u8; 4], answer: &[u8]) -> bool {
        let expected = format!("{PREFIX}{}", md5_hex(&[self.hex.as_bytes(), &salt]));
        super::scram::equal(expected.as_bytes(), answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_postgres_protocol() {
        let stored = Md5Password::new("alice", "s3cret");
        // postgres-protocol computes what libpq sends.
        let salt = [1, 2, 3, 4];
        let answer = postgres_protocol::authentication::md5_hash(b"alice", b"s3cret", salt);
        assert!(stored.accepts(salt, answer.as_bytes()));
        assert!(!stored.accepts([4, 3, 2, 1], answer.as_bytes()));
        let wrong = postgres_protocol::authentication::md5_hash(b"alice", b"guess", salt);
        assert!(!stored.accepts(salt, wrong.as_bytes()));
        assert_eq!(Md5Password::parse(&stored.to_string()), Some(stored));
        assert_eq!(Md5Password::parse("md5xyz"), None);
        assert_eq!(Md5Password::parse("SCRAM-SHA-256$4096:x$y:z"), None);
    }
}
