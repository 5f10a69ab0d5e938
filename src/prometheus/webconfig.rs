//! `--web.config.file`: TLS and basic auth, in the format of the Prometheus
//! exporter-toolkit, so the file an operator already has for node_exporter works here:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/sockwatch/tls.crt
//!   key_file: /etc/sockwatch/tls.key
//!   min_version: TLS12          # or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...      # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! A setting of that format sockwatch does not implement (client certificates, cipher
//! suites, HTTP/2 options) is refused with a message naming it: silently ignoring a
//! security setting would be worse than failing to start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsSection>,
    #[serde(default)]
    basic_auth_users: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct TlsSection {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    min_version: Option<String>,
    /// Everything else of the exporter-toolkit format, refused by name.
    #[serde(flatten)]
    other: HashMap<String, serde_yaml_ng::Value>,
}

/// What the HTTP server needs: a TLS acceptor and the users allowed in. The default (no
/// `--web.config.file`) is plain HTTP without auth.
#[derive(Default)]
pub struct WebConfig {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub auth: Option<BasicAuth>,
}

/// What is wrong in the file, in words; [`WebConfigError`] adds which file.
type Problem = String;

/// A web config file that cannot be used, with what is wrong in it.
#[derive(Debug, thiserror::Error)]
#[error("web config {}: {problem}", path.display())]
pub struct WebConfigError {
    path: PathBuf,
    problem: String,
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let ctx = |problem: String| WebConfigError { path: path.to_owned(), problem };
        let text =
            crate::sources::read_small_file(path, MAX_WEB_CONFIG).map_err(|e| ctx(format!("cannot read: {e}")))?;
        // The YAML parser takes seconds to minutes on deeply nested flow collections
        // (`[[[[...`): refused before it runs, as no web config needs them.
        if let Some(line) = too_deep(&text) {
            return Err(ctx(format!("line {line}: nested deeper than {MAX_FLOW_DEPTH} levels")));
        }
        let file: File = serde_yaml_ng::from_str(&text).map_err(|e| ctx(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = file.tls_server_config.map(|t| tls_acceptor(t, base)).transpose().map_err(ctx)?;
        let auth = if file.basic_auth_users.is_empty() {
            None
        } else {
            for (user, hash) in &file.basic_auth_users {
                // Parse now, so a broken hash fails at start-up, not at the first scrape.
                hash.parse::<bcrypt::HashParts>()
                    .map_err(|e| ctx(format!("basic_auth_users.{user}: not a bcrypt hash ({e})")))?;
            }
            Some(BasicAuth { users: file.basic_auth_users, verified: Arc::new(Mutex::new(HashMap::new())) })
        };
        Ok(WebConfig { tls, auth })
    }
}

/// Largest web config read: thousands of users' bcrypt hashes fit.
pub const MAX_WEB_CONFIG: u64 = 256 * 1024;
/// Largest certificate or key file read (a chain of a few certificates is a few KiB).
pub const MAX_PEM_FILE: u64 = 1 << 20;
/// Deepest `[`/`{` nesting accepted in a web config (it needs 1 at most).
const MAX_FLOW_DEPTH: usize = 16;

/// The line where flow collections nest deeper than [`MAX_FLOW_DEPTH`], outside quotes
/// and comments; `None` when they never do.
fn too_deep(text: &str) -> Option<usize> {
    let (mut depth, mut quote, mut line) = (0usize, None::<char>, 1usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\n') => {
                line += 1;
                if quote == Some('#') {
                    quote = None;
                }
            }
            (Some('#'), _) => {}
            (Some('"'), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => quote = Some('#'),
            (None, '[' | '{') => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some(line);
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Reads a certificate or key file as the web config names it: non-blocking and only a
/// regular file (a FIFO there would block SIGHUP's reload for good, `/dev/zero` would
/// never end), at most [`MAX_PEM_FILE`] bytes.
fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>, Problem> {
    let file =
        crate::sources::open_regular(path).map_err(|e| format!("{what} {}: cannot read: {e}", path.display()))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_PEM_FILE + 1), &mut bytes)
        .map_err(|e| format!("{what} {}: cannot read: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(format!("{what} {}: larger than {MAX_PEM_FILE} bytes", path.display()));
    }
    Ok(bytes)
}

/// Relative paths in the file are relative to the file, as in exporter-toolkit.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn tls_acceptor(t: TlsSection, base: &Path) -> Result<tokio_rustls::TlsAcceptor, Problem> {
    if let Some(key) = t.other.keys().next() {
        return Err(format!(
            "tls_server_config.{key} is not supported by sockwatch (remove it, or terminate TLS in front)"
        ));
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match t.min_version.as_deref() {
        None | Some("TLS12") => &[&rustls::version::TLS12, &rustls::version::TLS13],
        Some("TLS13") => &[&rustls::version::TLS13],
        Some(v) => return Err(format!("tls_server_config.min_version {v:?}: sockwatch supports TLS12 and TLS13")),
    };
    let cert = resolve(base, &t.cert_file.ok_or("tls_server_config.cert_file is required")?);
    let key = resolve(base, &t.key_file.ok_or("tls_server_config.key_file is required")?);
    let cert_pem = read_pem("tls_server_config.cert_file", &cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_server_config.cert_file {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("tls_server_config.cert_file {}: no certificate in it", cert.display()));
    }
    check_leaf(&certs[0], &cert)?;
    let key_pem = read_pem("tls_server_config.key_file", &key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("tls_server_config.key_file {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                format!("tls_server_config: certificate and key do not fit together: {e}")
            }
            e => format!("tls_server_config.cert_file {}: rustls cannot use it: {e}", cert.display()),
        })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The leaf certificate's version and validity, read before rustls sees it: a v1
/// certificate is refused by name (rustls takes only v3), an expired one or one expiring
/// within 14 days is a warning (clients will refuse it, or soon).
fn check_leaf(der: &[u8], path: &Path) -> Result<(), Problem> {
    let Some((version, not_after)) = der::leaf_facts(der) else {
        return Err(format!(
            "tls_server_config.cert_file {}: the first certificate is not valid DER X.509",
            path.display()
        ));
    };
    if version < 3 {
        return Err(format!(
            "tls_server_config.cert_file {}: an X.509 v{version} certificate; TLS here needs v3 (made by \
             `openssl req -x509`, not by `openssl x509 -req` without -extfile)",
            path.display()
        ));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let date = der::date(not_after);
    if not_after < now {
        tracing::warn!(
            "tls_server_config.cert_file {}: the certificate expired on {date}; clients will refuse it",
            path.display()
        );
    } else if not_after - now < 14 * 86_400 {
        tracing::warn!("tls_server_config.cert_file {}: the certificate expires on {date}", path.display());
    }
    Ok(())
}

/// Just enough DER to read an X.509 certificate's version and notAfter.
mod der {
    /// One TLV: (tag, value, rest).
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, b) = b.split_first()?;
        let (&first, mut b) = b.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let (bytes, rest) = (b.get(..n)?, b.get(n..)?);
            b = rest;
            bytes.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x))
        };
        Some((tag, b.get(..len)?, b.get(len..)?))
    }

    /// (version 1-3, notAfter as Unix seconds) of a DER certificate.
    pub fn leaf_facts(cert: &[u8]) -> Option<(u8, i64)> {
        let (0x30, cert, _) = tlv(cert)? else { return None };
        let (0x30, mut tbs, _) = tlv(cert)? else { return None };
        let mut version = 1;
        let (tag, value, rest) = tlv(tbs)?;
        if tag == 0xa0 {
            let (0x02, v, _) = tlv(value)? else { return None };
            version = v.last()?.saturating_add(1);
            tbs = rest;
        }
        // serialNumber, signature, issuer, then validity.
        for _ in 0..3 {
            tbs = tlv(tbs)?.2;
        }
        let (0x30, validity, _) = tlv(tbs)? else { return None };
        let (_, _, validity) = tlv(validity)?; // notBefore
        let (tag, time, _) = tlv(validity)?;
        Some((version, parse_time(tag, std::str::from_utf8(time).ok()?)?))
    }

    /// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ), to Unix seconds.
    fn parse_time(tag: u8, s: &str) -> Option<i64> {
        let s = s.strip_suffix('Z')?;
        // Digits only, so every slice below falls on a character boundary (a crafted
        // certificate with "é" in it must be refused, not panic the daemon).
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (year, rest) = match (tag, s.len()) {
            (0x17, 12) => {
                let yy: i64 = s[..2].parse().ok()?;
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
            }
            (0x18, 14) => (s[..4].parse().ok()?, &s[4..]),
            _ => return None,
        };
        let n = |i: usize| rest.get(i..i + 2)?.parse::<i64>().ok();
        let (month, day, h, m, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
            return None;
        }
        Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
    }

    /// Days since 1970-01-01 (Howard Hinnant's algorithm).
    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// YYYY-MM-DD of Unix seconds.
    pub fn date(secs: i64) -> String {
        let z = secs.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!("{y:04}-{m:02}-{d:02}")
    }

    #[test]
    fn times_and_dates() {
        assert_eq!(parse_time(0x17, "700101000000Z"), Some(0));
        assert_eq!(parse_time(0x17, "261125223639Z"), Some(1_795_646_199));
        assert_eq!(parse_time(0x18, "20491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_time(0x17, "261325223639Z"), None);
        assert_eq!(parse_time(0x17, "2611252236Z"), None);
        // Twelve bytes, not twelve digits: a multi-byte character where a digit belongs.
        assert_eq!(parse_time(0x17, "7\u{e9}0101000000Z"), None);
        assert_eq!(parse_time(0x18, "20\u{e9}101010000000Z"), None);
        assert_eq!(parse_time(0x17, "+70101000000Z"), None);
        assert_eq!(date(1_795_646_199), "2026-11-25");
        assert_eq!(date(0), "1970-01-01");
        assert!(leaf_facts(&[0x30, 0x03, 0x30, 0x01]).is_none());
        assert!(leaf_facts(&[]).is_none());
    }
}

/// Basic auth against bcrypt hashes. bcrypt is slow on purpose (tens of ms), so a
/// verified `Authorization` header is remembered: a scrape every 15 s costs one hash
/// per process lifetime, not one per scrape.
#[derive(Clone)]
pub struct BasicAuth {
    users: HashMap<String, String>,
    verified: Arc<Mutex<HashMap<String, bool>>>,
}

const CACHE_LIMIT: usize = 256;

impl BasicAuth {
    /// Whether this exact header was verified before: cheap, fine on the async runtime.
    pub fn known_good(&self, header: Option<&str>) -> bool {
        header.is_some_and(|h| self.verified.lock().is_ok_and(|c| c.contains_key(h)))
    }

    /// Checks an `Authorization` header value. Blocking (bcrypt): call off the runtime.
    pub fn check(&self, header: Option<&str>) -> bool {
        let Some(header) = header else { return false };
        if self.known_good(Some(header)) {
            return true;
        }
        let ok = self.verify(header);
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            // Only successes are remembered: a guesser pays bcrypt for every attempt.
            if ok {
                cache.insert(header.to_owned(), true);
            }
        }
        ok
    }

    fn verify(&self, header: &str) -> bool {
        let Some(encoded) = header.strip_prefix("Basic ") else { return false };
        let Some(decoded) = decode_base64(encoded.trim()) else { return false };
        let Ok(pair) = String::from_utf8(decoded) else { return false };
        let Some((user, password)) = pair.split_once(':') else { return false };
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                // Same cost as a real check, so timing does not reveal which users exist.
                if let Some(any) = self.users.values().next() {
                    let _ = bcrypt::verify(password, any);
                }
                false
            }
        }
    }
}

/// The credentials of a Basic `Authorization` header: standard base64, its `=` padding
/// optional (clients differ).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{general_purpose, DecodePaddingMode, Engine};
    const ENGINE: general_purpose::GeneralPurpose = general_purpose::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        general_purpose::GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    ENGINE.decode(s).ok()
}

#[test]
fn base64_credentials() {
    assert_eq!(decode_base64("YWxpY2U6c2VjcmV0").unwrap(), b"alice:secret");
    assert_eq!(decode_base64("YQ==").unwrap(), b"a");
    assert_eq!(decode_base64("YQ").unwrap(), b"a", "padding optional");
    assert_eq!(decode_base64("YWI=").unwrap(), b"ab");
    assert!(decode_base64("!!").is_none());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A web config file written for a test, removed (with its directory, once empty)
    /// when dropped.
    struct Written(PathBuf);

    impl std::ops::Deref for Written {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Written {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir(dir); // fails while another test's file is there
            }
        }
    }

    fn write(name: &str, text: &str) -> Written {
        let dir = std::env::temp_dir().join(format!("sockwatch-webcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        Written(p)
    }

    #[test]
    fn bad_files_are_named_errors() {
        for (text, want) in [
            ("basic_auth_user:\n  a: b\n", "unknown field `basic_auth_user`"),
            ("basic_auth_users:\n  alice: plaintext\n", "basic_auth_users.alice: not a bcrypt hash"),
            ("tls_server_config:\n  key_file: k\n", "cert_file is required"),
            ("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: k\n", "cert_file /nonexistent.crt"),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n",
                "client_auth_type is not supported",
            ),
            ("tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: SSL3\n", "min_version \"SSL3\""),
            ("[not yaml", "web config"),
        ] {
            let p = write("bad.yml", text);
            let e = WebConfig::load(&p).err().unwrap_or_else(|| panic!("{text:?} accepted")).to_string();
            assert!(e.contains(want) && e.contains("bad.yml"), "{text:?}: {e}");
        }
    }

    #[test]
    fn basic_auth_checks_and_caches() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let p = write("auth.yml", &format!("basic_auth_users:\n  alice: {hash}\n"));
        let auth = WebConfig::load(&p).unwrap().auth.unwrap();
        let good = "Basic YWxpY2U6c2VjcmV0"; // alice:secret
        assert!(!auth.known_good(Some(good)), "nothing is known before a bcrypt check");
        assert!(auth.check(Some(good)));
        assert!(auth.known_good(Some(good)), "the next scrape is answered without bcrypt");
        assert!(auth.verified.lock().unwrap().contains_key(good));
        assert!(auth.check(Some(good)));
        assert!(!auth.check(Some("Basic YWxpY2U6d3Jvbmc="))); // alice:wrong
        assert!(!auth.check(Some("Basic Ym9iOnNlY3JldA=="))); // bob:secret
        assert!(!auth.check(Some("Bearer x")));
        assert!(!auth.check(Some("Basic !!!")));
        assert!(!auth.check(None));
        assert_eq!(auth.verified.lock().unwrap().len(), 1, "failures are not cached");
        assert!(!auth.known_good(Some("Basic YWxpY2U6d3Jvbmc=")) && !auth.known_good(None));
    }

    /// Files an attacker may put where the config points: a FIFO as the certificate (it
    /// blocked SIGHUP's reload for good), /dev/zero (a 2 GB allocation, then an abort), and
    /// deeply nested YAML (68 s in the parser): each refused at once, by name.
    #[test]
    fn hostile_files_are_refused_at_once() {
        let (dir, fifo) = crate::sources::dir_with_fifo("hostile");
        let started = std::time::Instant::now();
        for cert in [fifo.to_str().unwrap(), "/dev/zero"] {
            let p = write("hostile.yml", &format!("tls_server_config:\n  cert_file: {cert}\n  key_file: {cert}\n"));
            let e = WebConfig::load(&p).err().expect("refused").to_string();
            assert!(e.contains("cert_file") && e.contains("not a regular file"), "{e}");
        }
        let n = 32 * 1024;
        let p = write("nested.yml", &format!("basic_auth_users: {}{}\n", "[".repeat(n), "]".repeat(n)));
        let e = WebConfig::load(&p).err().expect("refused").to_string();
        assert!(e.contains("line 1: nested deeper than 16 levels"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
        // Brackets inside quotes and comments are not nesting.
        assert_eq!(
            too_deep("a: \"[[[[[[[[[[[[[[[[[[[[\" # {{{{{{{{{{{{{{{{{{{{{{\nb: '{{{{{{{{{{{{{{{{{{{{{{'\n"),
            None
        );
        assert_eq!(too_deep(&format!("a:\n  b: {}", "[".repeat(17))), Some(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
