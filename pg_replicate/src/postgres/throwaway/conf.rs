//! Text the throwaway cluster writes: `pg_hba.conf`, the `openssl`
//! configuration of its certificates, quoted settings and URLs.

use std::fmt::Write as _;

use super::ThrowawayRole;

/// `openssl` configuration: a CA, and a server certificate valid for
/// `localhost` and 127.0.0.1 (webpki, as used by rustls, only looks at the
/// subject alternative names).
pub(super) const OPENSSL_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = pg_replicate throwaway

[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// `pg_hba.conf`: the Unix socket is trusted; over TCP from 127.0.0.1 each
/// [`ThrowawayRole`] gets its method, everyone else `scram-sha-256`.
pub(super) fn pg_hba_conf() -> String {
    let mut hba = String::from(
        "# pg_replicate throwaway cluster\n\
         local all all trust\n\
         local replication all trust\n",
    );
    for role in ThrowawayRole::ALL {
        if role != ThrowawayRole::Superuser && role.auth_method() != "scram-sha-256" {
            let _ = writeln!(
                hba,
                "host all {} 127.0.0.1/32 {}",
                role.name(),
                role.auth_method()
            );
        }
    }
    hba.push_str(
        "host all all 127.0.0.1/32 scram-sha-256\n\
         host replication all 127.0.0.1/32 scram-sha-256\n",
    );
    hba
}

/// A `postgresql.conf` string literal.
pub(super) fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(super) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hba_names_each_method_role_before_the_catch_all() {
        let hba = pg_hba_conf();
        let md5 = hba.find("host all pgr_md5 127.0.0.1/32 md5").unwrap();
        let password = hba
            .find("host all pgr_password 127.0.0.1/32 password")
            .unwrap();
        let trust = hba.find("host all pgr_trust 127.0.0.1/32 trust").unwrap();
        let all = hba.find("host all all 127.0.0.1/32 scram-sha-256").unwrap();
        assert!(md5 < all && password < all && trust < all);
        assert!(hba.starts_with("# pg_replicate throwaway cluster\nlocal all all trust\n"));
    }

    #[test]
    fn quoting() {
        assert_eq!(conf_quote("/tmp/it's"), "'/tmp/it''s'");
        assert_eq!(percent_encode("a b@c"), "a%20b%40c");
    }
}
