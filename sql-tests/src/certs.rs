//! Test certificates made with openssl: a CA, and certificates it signs for
//! `localhost` / 127.0.0.1 that serve both as server and client identities.

use std::path::{Path, PathBuf};
use std::process::Command;

/// PEM files of a certificate authority.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate.
    pub cert: PathBuf,
    /// The CA's private key.
    pub key: PathBuf,
}

/// PEM files of a certificate signed by a [`TestCa`].
#[derive(Debug, Clone)]
pub struct TestCertificate {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Runs openssl in `dir`, panicking with its message when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// P-256 keys: quick to make.
const NEW_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

impl TestCa {
    /// A new self-signed CA named `name`, written into `dir` as
    /// `<name>.pem` and `<name>.key`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
        let subject = format!("/CN={name}");
        let mut args = vec!["req", "-x509"];
        args.extend(NEW_KEY);
        args.extend([
            "-keyout", &key, "-out", &cert, "-days", "2", "-subj", &subject,
        ]);
        openssl(dir, &args);
        Self {
            cert: dir.join(cert),
            key: dir.join(key),
        }
    }

    /// A certificate for `localhost` and 127.0.0.1, usable by servers and
    /// clients, signed by this CA and written into `dir` as `<name>.pem` and
    /// `<name>.key`.
    pub fn issue(&self, dir: &Path, name: &str) -> TestCertificate {
        let (cert, key, csr, ext) = (
            format!("{name}.pem"),
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
        );
        let mut args = vec!["req"];
        args.extend(NEW_KEY);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"]);
        openssl(dir, &args);
        std::fs::write(
            dir.join(&ext),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
             extendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("writes the extensions file");
        let ca_cert = self
            .cert
            .to_str()
            .expect("the CA certificate path is UTF-8");
        let ca_key = self.key.to_str().expect("the CA key path is UTF-8");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                ca_cert,
                "-CAkey",
                ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        TestCertificate {
            cert: dir.join(cert),
            key: dir.join(key),
        }
    }
}
