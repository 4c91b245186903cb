//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, server side,
//! over stored verifiers: the server keeps only `StoredKey` and `ServerKey`
//! (PostgreSQL's `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`),
//! never the password or anything a client could log in with.
//!
//! One [`Exchange`] belongs to one connection: it is created when the client's
//! first message arrives and consumed by its final one.

use std::fmt;
use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

/// The mechanism name clients select.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// PostgreSQL's default iteration count.
const ITERATIONS: u32 = 4096;

/// Salt length of new verifiers, in bytes (PostgreSQL's).
const SALT_LEN: usize = 16;

/// Why an exchange failed.
#[derive(Debug, PartialEq, Eq)]
pub enum ScramError {
    /// The client's message does not follow the protocol.
    Malformed(&'static str),
    /// The proof does not match: a wrong password.
    WrongPassword,
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(what) => write!(f, "malformed SCRAM message: {what}"),
            Self::WrongPassword => f.write_str("wrong password"),
        }
    }
}

/// A stored password verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Verifier {
    /// The verifier of `password` with a new random salt.
    pub fn new(password: &str) -> Self {
        let mut salt = vec![0; SALT_LEN];
        SystemRandom::new()
            .fill(&mut salt)
            .expect("the system's random source works");
        Self::with_salt(password, salt, ITERATIONS)
    }

    fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        // As PostgreSQL: SASLprep, or the raw bytes when it does not apply.
        let normalized = stringprep::saslprep(password)
            .map(|p| p.into_owned())
            .unwrap_or_else(|_| password.to_string());
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iterations.max(1)).expect("at least one iteration"),
            &salt,
            normalized.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        Self {
            iterations,
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
            salt,
        }
    }

    /// A verifier for a user that does not exist: the exchange runs to its
    /// end and fails like a wrong password, so that clients cannot tell
    /// unknown users from known ones.
    pub fn unknown_user() -> Self {
        let mut random = [0u8; 32];
        SystemRandom::new()
            .fill(&mut random)
            .expect("the system's random source works");
        Self {
            iterations: ITERATIONS,
            salt: random[..SALT_LEN].to_vec(),
            stored_key: random,
            server_key: random,
        }
    }

    /// Reads PostgreSQL's text form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("not a SCRAM-SHA-256 verifier: {}", redacted(text));
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(invalid)?;
        let (parameters, keys) = rest.split_once('$').ok_or_else(invalid)?;
        let (iterations, salt) = parameters.split_once(':').ok_or_else(invalid)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or_else(invalid)?;
        let key = |text: &str| -> Result<[u8; 32], String> {
            STANDARD
                .decode(text)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(invalid)
        };
        Ok(Self {
            iterations: iterations
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(invalid)?,
            salt: STANDARD.decode(salt).map_err(|_| invalid())?,
            stored_key: key(stored_key)?,
            server_key: key(server_key)?,
        })
    }
}

/// The verifier's shape with its keys left out, for error messages.
fn redacted(text: &str) -> String {
    match text.split_once('$') {
        Some((method, _)) => format!("{method}$…"),
        None => "(not in the form SCRAM-SHA-256$…)".to_string(),
    }
}

impl fmt::Display for Verifier {
    /// PostgreSQL's text form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

/// A connection's exchange after the server's first message.
#[derive(Debug)]
pub struct Exchange {
    verifier: Verifier,
    /// The channel-binding header the client sent, as `c=` must repeat it.
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Exchange {
    /// Answers the client's first message with the server's first.
    pub fn start(verifier: Verifier, client_first: &[u8]) -> Result<(Self, String), ScramError> {
        let text = std::str::from_utf8(client_first)
            .map_err(|_| ScramError::Malformed("client-first is not UTF-8"))?;
        // gs2-header: channel binding flag, empty authzid.
        let (flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("no gs2 header"))?;
        match flag {
            "n" | "y" => {}
            _ if flag.starts_with("p=") => {
                return Err(ScramError::Malformed(
                    "channel binding was not offered (SCRAM-SHA-256-PLUS)",
                ))
            }
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no client-first-bare"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Malformed(
                "authorization identities are not supported",
            ));
        }
        // The user name is the startup packet's; PostgreSQL ignores `n=`.
        let client_nonce = bare
            .split(',')
            .find_map(|attribute| attribute.strip_prefix("r="))
            .filter(|nonce| {
                !nonce.is_empty() && nonce.bytes().all(|b| b.is_ascii_graphic() && b != b',')
            })
            .ok_or(ScramError::Malformed("no client nonce"))?;
        let mut server_nonce = [0u8; 18];
        SystemRandom::new()
            .fill(&mut server_nonce)
            .map_err(|_| ScramError::Malformed("no randomness"))?;
        let nonce = format!("{client_nonce}{}", STANDARD.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&verifier.salt),
            verifier.iterations
        );
        let exchange = Self {
            verifier,
            gs2_header: format!("{flag},{authzid},"),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// Checks the client's proof; on success, the server's final message
    /// (its own proof of knowing the verifier).
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(client_final)
            .map_err(|_| ScramError::Malformed("client-final is not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attribute in without_proof.split(',') {
            if let Some(value) = attribute.strip_prefix("c=") {
                binding = Some(value);
            } else if let Some(value) = attribute.strip_prefix("r=") {
                nonce = Some(value);
            }
        }
        if binding != Some(STANDARD.encode(&self.gs2_header).as_str()) {
            return Err(ScramError::Malformed("channel binding does not match"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof: [u8; 32] = STANDARD
            .decode(proof)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(ScramError::Malformed("bad proof encoding"))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = hmac_sha256(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for (key, (p, s)) in client_key.iter_mut().zip(proof.iter().zip(signature)) {
            *key = p ^ s;
        }
        if !equal(&sha256(&client_key), &self.verifier.stored_key) {
            return Err(ScramError::WrongPassword);
        }
        let server_signature = hmac_sha256(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)))
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    tag.as_ref().try_into().expect("HMAC-SHA-256 is 32 bytes")
}

fn sha256(data: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, data)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// Compares in time independent of where the inputs differ.
pub(super) fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's side of the exchange, as RFC 5802 computes it.
    fn client_final(password: &str, server_first: &str, client_first_bare: &str) -> String {
        let attribute = |name: &str| {
            server_first
                .split(',')
                .find_map(|a| a.strip_prefix(name))
                .unwrap()
                .to_string()
        };
        let (nonce, salt, iterations) = (attribute("r="), attribute("s="), attribute("i="));
        let verifier = Verifier::with_salt(
            password,
            STANDARD.decode(salt).unwrap(),
            iterations.parse().unwrap(),
        );
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(verifier.iterations).unwrap(),
            &verifier.salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac_sha256(&verifier.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        format!("{without_proof},p={}", STANDARD.encode(proof))
    }

    #[test]
    fn the_right_password_passes_and_a_wrong_one_fails() {
        let verifier = Verifier::new("s3cret");
        let stored = Verifier::parse(&verifier.to_string()).unwrap();
        assert_eq!(stored, verifier);
        for (password, outcome) in [("s3cret", true), ("S3cret", false)] {
            let bare = "n=,r=rOprNGfwEbeRWgbNEkqO";
            let (exchange, server_first) =
                Exchange::start(stored.clone(), format!("n,,{bare}").as_bytes()).unwrap();
            let result = exchange.finish(client_final(password, &server_first, bare).as_bytes());
            assert_eq!(result.is_ok(), outcome, "{password}: {result:?}");
            if !outcome {
                assert_eq!(result.unwrap_err(), ScramError::WrongPassword);
            }
        }
    }

    #[test]
    fn verifiers_made_by_postgres_protocol_are_read_and_checked() {
        // An independent implementation of PostgreSQL's verifier format.
        let text = postgres_protocol::password::scram_sha_256(b"postgres");
        let verifier = Verifier::parse(&text).unwrap();
        assert_eq!(verifier.to_string(), text);
        let bare = "n=,r=fyko+d2lbbFgONRv9qkxdawL";
        let (exchange, server_first) =
            Exchange::start(verifier, format!("n,,{bare}").as_bytes()).unwrap();
        assert!(exchange
            .finish(client_final("postgres", &server_first, bare).as_bytes())
            .is_ok());
        assert!(Verifier::parse("md5abc")
            .unwrap_err()
            .contains("not a SCRAM"));
        assert!(!Verifier::parse("SCRAM-SHA-256$4096:x$y:z")
            .unwrap_err()
            .contains("y:z"));
    }

    #[test]
    fn malformed_messages_are_refused() {
        let verifier = Verifier::new("pw");
        for message in [
            "",
            "n,,",
            "x,,n=,r=abc",
            "p=tls-server-end-point,,n=,r=a",
            "n,a=u,n=,r=a",
        ] {
            assert!(
                Exchange::start(verifier.clone(), message.as_bytes()).is_err(),
                "{message}"
            );
        }
        let (exchange, _) = Exchange::start(verifier, b"n,,n=,r=abc").unwrap();
        assert!(matches!(
            exchange.finish(b"c=biws,r=other,p=AAAA"),
            Err(ScramError::Malformed(_))
        ));
    }
}
