//! Signature checks with the reference Python libraries (`standardwebhooks`, `stripe`, `cryptography` for
//! Ed25519), through
//! `tests/python/verify_signature.py`.
//!
//! The interpreter comes from `SWITCHYARD_TEST_PYTHON` (a virtualenv with `tests/python/requirements.txt`
//! installed). When it is unset or cannot import the libraries, tests that need it skip their library checks with a
//! `SKIP` line — except under `CI=true`, where that is a failure: CI must verify signatures for real.
#![allow(dead_code)] // shared by several test binaries, each using a part

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use tokio::io::AsyncWriteExt;

pub const PYTHON_ENV: &str = "SWITCHYARD_TEST_PYTHON";

/// Runs `verify_signature.py` with an interpreter known to have the libraries.
#[derive(Debug, Clone)]
pub struct Verifier {
    python: PathBuf,
    script: PathBuf,
}

/// The verifier, or `None` (after printing why) when the libraries are not available outside CI.
pub fn verifier() -> Option<&'static Verifier> {
    static FOUND: OnceLock<Result<Verifier, String>> = OnceLock::new();
    match FOUND.get_or_init(find) {
        Ok(verifier) => Some(verifier),
        Err(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but the Python signature verifier is unavailable: {why}");
            }
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| eprintln!("SKIP: reference-library signature checks: {why}"));
            None
        }
    }
}

fn find() -> Result<Verifier, String> {
    let script = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/python/verify_signature.py"));
    if !script.is_file() {
        return Err(format!("{} is missing", script.display()));
    }
    let python = match std::env::var_os(PYTHON_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => {
            return Err(format!(
                "{PYTHON_ENV} is not set (create a venv with `pip install -r tests/python/requirements.txt` and \
                 point {PYTHON_ENV} at its python)"
            ))
        }
    };
    let output = std::process::Command::new(&python)
        .args(["-c", "import standardwebhooks.webhooks, stripe, cryptography"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{PYTHON_ENV}={}: cannot run it: {e}", python.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{PYTHON_ENV}={} cannot import standardwebhooks, stripe and cryptography: {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(Verifier { python, script })
}

impl Verifier {
    /// Asks the reference library whether `body` with `headers` (lower-cased names, as received) verifies under
    /// `secret`. `scheme` is `"standard"`, `"standard-asymmetric"` (`secret`: the `whpk_` public key) or `"stripe"`. `Err` carries the library's rejection message.
    pub async fn verify(
        &self,
        scheme: &str,
        secret: &str,
        headers: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<(), String> {
        let body = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
        let request = serde_json::json!({ "scheme": scheme, "secret": secret, "headers": headers, "body": body });
        let mut child = tokio::process::Command::new(&self.python)
            .arg(&self.script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.python.display()));
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(request.to_string().as_bytes()).await.expect("write to verify_signature.py");
        drop(stdin);
        let output = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("verify_signature.py did not finish within 30 s")
            .expect("wait for verify_signature.py");
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        match output.status.code() {
            Some(0) => Ok(()),
            Some(1) => Err(stderr),
            other => panic!("verify_signature.py failed to run (exit {other:?}): {stderr}"),
        }
    }
}
