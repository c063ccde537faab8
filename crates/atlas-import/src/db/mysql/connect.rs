//! A `mysql://` URL as connection options: host, port, user, password and
//! database, plus the query parameters users of the mysql client and sqlx
//! know (`ssl-mode`, `ssl-ca`, `socket`) and `local-infile`.

use std::path::PathBuf;

use mysql_async::{Conn, DriverError, Opts, OptsBuilder, SslOpts};

use super::write::WriteMethod;
use crate::error::{AtlasError, Result};

/// Statements run on every connection (and again after a pooled one is reset):
/// identifiers quoted with `"` as everywhere else, backslash escapes in string
/// literals whatever the server's default (the probe's literals and `LOAD
/// DATA`'s field syntax rely on them), times in UTC.
const SESSION_SETUP: &str = "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(TRIM(BOTH ',' FROM \
     REPLACE(CONCAT(',', @@sql_mode, ','), ',NO_BACKSLASH_ESCAPES,', ',')), ''), 'ANSI_QUOTES'), \
     time_zone = '+00:00'";

/// The longest packet the client reads: the protocol's limit.
const MAX_PACKET_READ: usize = 1 << 30;

/// `ssl-mode`: whether and how the connection is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Disabled,
    /// Encrypted where the server offers it, without verifying it (the default).
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

/// What a URL asks for, before the first connection settles the TLS question.
#[derive(Debug, Clone)]
pub(super) struct UrlOptions {
    plain: OptsBuilder,
    tls: TlsMode,
    /// A server on this machine with `ssl-mode` left to its default: tried
    /// without TLS first (see [`UrlOptions::connect`]).
    plain_first: bool,
    ca: Option<PathBuf>,
    /// `local-infile=false`: rows never go in by `LOAD DATA LOCAL INFILE`,
    /// even where the server accepts it.
    pub(super) local_infile: bool,
    /// `write-method=...`: how rows go in, where the URL says.
    pub(super) write_method: Option<WriteMethod>,
}

impl UrlOptions {
    /// Parses `url` (`mysql://` or `mariadb://`); `masked` names it in errors.
    pub(super) fn parse(url: &str, masked: &str) -> Result<Self> {
        let invalid =
            |why: String| AtlasError::Usage(format!("invalid MySQL URL '{masked}': {why}"));
        let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| invalid(format!("'{s}' is not valid percent-encoding")))
        };
        let host = parsed
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .filter(|h| !h.is_empty())
            .unwrap_or("localhost")
            .to_string();
        let user = match parsed.username() {
            "" => None,
            user => Some(decode(user)?),
        };
        let password = parsed.password().map(decode).transpose()?;
        let database = match parsed.path().trim_start_matches('/') {
            "" => None,
            db => Some(decode(db)?),
        };
        let loopback = super::super::is_loopback_host(&host);
        let mut builder = OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(parsed.port().unwrap_or(3306))
            .user(user)
            .pass(password)
            .db_name(database)
            .prefer_socket(false)
            // UPDATE reports the rows it matched, as the other databases do.
            .client_found_rows(true)
            // A stored value may be longer than the server's own limit on
            // what it takes in one packet (a field `LOAD DATA` took in
            // pieces): read rows up to the protocol's 1 GiB. What is sent is
            // sized by the server's `max_allowed_packet`, read separately.
            .max_allowed_packet(Some(MAX_PACKET_READ))
            .setup(vec![SESSION_SETUP]);
        let mut tls = TlsMode::Preferred;
        let mut tls_named = false;
        let mut ca = None;
        let mut local_infile = true;
        let mut write_method = None;
        for (name, value) in parsed.query_pairs() {
            match (name.as_ref(), value.as_ref()) {
                ("ssl-mode" | "sslmode", mode) => {
                    tls_named = true;
                    tls = match mode.to_ascii_lowercase().replace('-', "_").as_str() {
                        "disabled" => TlsMode::Disabled,
                        "preferred" => TlsMode::Preferred,
                        "required" => TlsMode::Required,
                        "verify_ca" => TlsMode::VerifyCa,
                        "verify_identity" => TlsMode::VerifyIdentity,
                        other => {
                            return Err(invalid(format!(
                                "ssl-mode '{other}': expected disabled, preferred, required, \
                                 verify_ca or verify_identity"
                            )));
                        }
                    }
                }
                ("ssl-ca" | "sslrootcert", path) => ca = Some(PathBuf::from(path)),
                ("socket", path) => builder = builder.socket(Some(path.to_string())),
                ("local-infile", flag) => {
                    local_infile = match flag {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => {
                            return Err(invalid(format!(
                                "local-infile '{other}': expected true or false"
                            )));
                        }
                    }
                }
                ("write-method", name) => {
                    write_method = Some(WriteMethod::parse(name).ok_or_else(|| {
                        invalid(format!(
                            "write-method '{name}': expected {}",
                            WriteMethod::NAMES
                        ))
                    })?);
                }
                (other, _) => {
                    return Err(invalid(format!(
                        "unknown parameter '{other}' (known: ssl-mode, ssl-ca, socket, \
                         local-infile, write-method)"
                    )));
                }
            }
        }
        Ok(Self {
            plain: builder,
            tls,
            plain_first: loopback && !tls_named,
            ca,
            local_infile,
            write_method,
        })
    }

    /// Opens a connection and returns it with the options that worked, for
    /// every later connection. With `ssl-mode=preferred` TLS is tried first
    /// and given up only when the server does not offer it; but a server on
    /// this machine, with `ssl-mode` left to that default, is tried without
    /// TLS first (TLS protects nothing there, and a plain connection lets
    /// MariaDB's rows go by pipelined array binding), and with TLS only if
    /// it refuses the plain one (`require_secure_transport`, a user that
    /// `REQUIRE`s SSL).
    pub(super) async fn connect(&self) -> std::result::Result<(Conn, Opts), mysql_async::Error> {
        let plain = || Opts::from(self.plain.clone());
        let tls = || Opts::from(self.with_tls());
        match self.tls {
            TlsMode::Disabled => connect(plain()).await,
            TlsMode::Preferred if self.plain_first => match connect(plain()).await {
                Err(refused @ mysql_async::Error::Server(_)) => match connect(tls()).await {
                    // No TLS either: the plain connection's refusal says why.
                    Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer)) => {
                        Err(refused)
                    }
                    tried => tried,
                },
                tried => tried,
            },
            TlsMode::Preferred => match connect(tls()).await {
                Err(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer)) => {
                    connect(plain()).await
                }
                tried => tried,
            },
            _ => connect(tls()).await,
        }
    }

    fn with_tls(&self) -> OptsBuilder {
        let verify_chain = matches!(self.tls, TlsMode::VerifyCa | TlsMode::VerifyIdentity);
        let mut ssl = SslOpts::default()
            .with_danger_accept_invalid_certs(!verify_chain)
            .with_danger_skip_domain_validation(self.tls != TlsMode::VerifyIdentity);
        if let Some(ca) = &self.ca {
            ssl = ssl.with_root_certs(vec![ca.clone().into()]);
        }
        self.plain.clone().ssl_opts(Some(ssl))
    }
}

/// A connection by `opts`, with them.
async fn connect(opts: Opts) -> std::result::Result<(Conn, Opts), mysql_async::Error> {
    Conn::new(opts.clone()).await.map(|conn| (conn, opts))
}

/// `%XX` sequences decoded as UTF-8 (user names, passwords, database names).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_and_parameters() {
        let options = UrlOptions::parse(
            "mysql://us%40er:p%3Ass@db.example:3307/my%20db?ssl-mode=required&local-infile=false",
            "masked",
        )
        .unwrap();
        let opts = Opts::from(options.plain.clone());
        assert_eq!(opts.user(), Some("us@er"));
        assert_eq!(opts.pass(), Some("p:ss"));
        assert_eq!(opts.db_name(), Some("my db"));
        assert_eq!(opts.tcp_port(), 3307);
        assert_eq!(options.tls, TlsMode::Required);
        assert!(!options.plain_first, "not this machine, and a mode named");
        assert!(!options.local_infile);
        let local = |url| UrlOptions::parse(url, "m").unwrap().plain_first;
        assert!(local("mysql://root@127.0.0.1:3306/db"));
        assert!(local("mysql://root@localhost/db"));
        assert!(local("mysql://root@[::1]:3306/db"));
        assert!(!local("mysql://root@127.0.0.1/db?ssl-mode=preferred"));
        assert!(!local("mysql://root@db.example/db"));
        assert_eq!(options.write_method, None);
        let array = UrlOptions::parse("mysql://h/db?write-method=array", "m").unwrap();
        assert_eq!(array.write_method, Some(WriteMethod::ArrayBinding));
        let method = UrlOptions::parse("mysql://h/db?write-method=copy", "m")
            .unwrap_err()
            .to_string();
        assert!(
            method.contains("write-method 'copy': expected array, load-data or insert"),
            "{method}"
        );

        let unknown = UrlOptions::parse("mysql://root@h/db?charsett=x", "mysql://root@h/db")
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("unknown parameter 'charsett'"),
            "{unknown}"
        );
        let mode = UrlOptions::parse("mysql://h/db?ssl-mode=maybe", "m").unwrap_err();
        assert!(mode.to_string().contains("ssl-mode 'maybe'"), "{mode}");
    }
}
