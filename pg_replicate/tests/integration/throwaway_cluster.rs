//! The throwaway cluster itself: its roles, its TLS certificate and its
//! process-exit watchdog.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pg_replicate::postgres::throwaway::{ThrowawayCluster, ThrowawayOptions, ThrowawayRole};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support;

#[tokio::test]
async fn throwaway_roles_authenticate_with_their_methods() {
    let pg = support::cluster();
    if !pg.auth_roles_available("throwaway_roles_authenticate_with_their_methods") {
        return;
    }
    let db = support::fresh_database("throwaway_roles_authenticate").await;
    for role in ThrowawayRole::ALL {
        let client = support::connect(&db.config_as(role.name()))
            .await
            .unwrap_or_else(|e| panic!("{} cannot log in: {e}", role.name()));
        let row = client
            .query_one(
                "SELECT current_user::text, rolreplication FROM pg_roles \
                 WHERE rolname = current_user",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), role.name());
        assert!(row.get::<_, bool>(1), "{} lacks REPLICATION", role.name());

        let mut wrong = db.config_as(role.name());
        wrong.password = Some("wrong".to_owned());
        let result = support::connect(&wrong).await;
        assert_eq!(
            result.is_ok(),
            role == ThrowawayRole::Trust,
            "{} with a wrong password",
            role.name()
        );
    }
    assert_eq!(
        db.psql("SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'pgr_md5'"),
        "md5"
    );

    if let Some(cluster) = pg.throwaway() {
        // The Unix socket is trusted.
        let client = support::connect(&cluster.socket_connection_config(db.name(), "pgr_scram"))
            .await
            .unwrap();
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "pgr_scram");
        assert!(cluster.url(db.name(), "pgr_md5").ends_with(&format!(
            "pgr_md5:pgr_md5_secret@127.0.0.1:{}/{}",
            cluster.port(),
            db.name()
        )));
    }
}

/// Sends an SSLRequest and runs a rustls handshake (webpki verification
/// against the cluster's CA) for `server_name`.
async fn tls_handshake(port: u16, ca: &Path, server_name: &str) -> std::io::Result<()> {
    use rustls::pki_types::ServerName;

    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca)?;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert?).map_err(std::io::Error::other)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
    let answer = tcp.read_u8().await?;
    assert_eq!(answer, b'S', "the server refused TLS");
    let name = ServerName::try_from(server_name.to_owned()).map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    Ok(())
}

#[tokio::test]
async fn throwaway_tls_certificate_verifies_for_localhost_and_ip() {
    let pg = support::cluster();
    let (Some(cluster), Some(ca)) = (pg.throwaway(), pg.ca_cert_path()) else {
        eprintln!("skipping throwaway_tls_certificate_verifies_for_localhost_and_ip: no throwaway cluster with TLS");
        return;
    };
    for name in ["localhost", "127.0.0.1"] {
        tls_handshake(cluster.port(), ca, name)
            .await
            .unwrap_or_else(|e| panic!("verify-full for {name}: {e}"));
    }
    assert!(tls_handshake(cluster.port(), ca, "example.com")
        .await
        .is_err());
}

/// Environment variable that turns [`exit_guard_child`] on, naming how the
/// child ends: `exit` (`std::process::exit`: statics are never dropped) or
/// `wait` (the parent kills it with SIGKILL: nothing runs at all).
const CHILD_ENV: &str = "PG_REPLICATE_EXIT_GUARD_CHILD";

/// Not a test of its own: the child process of the exit-guard tests. Holds a
/// cluster in a `static`, prints where it is, then ends as told.
#[test]
fn exit_guard_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    static CLUSTER: OnceLock<ThrowawayCluster> = OnceLock::new();
    let cluster =
        CLUSTER.get_or_init(|| ThrowawayCluster::start(ThrowawayOptions::default()).unwrap());
    let pid_file = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid")).unwrap();
    let pid = pid_file.lines().next().unwrap();
    println!(
        "EXIT_GUARD pid={pid} dir={}",
        cluster.socket_dir().display()
    );
    match mode.as_str() {
        "exit" => std::process::exit(0),
        _ => std::thread::sleep(Duration::from_secs(120)),
    }
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped).
fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Kills the child process if the test fails before it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn assert_cleaned_up_after_child(mode: &str) {
    if ThrowawayCluster::find_bin_dir().is_err() {
        eprintln!("skipping the exit guard test ({mode}): no PostgreSQL server binaries");
        return;
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "throwaway_cluster::exit_guard_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    // libtest prints `test <name> ... ` before the line, without a newline.
    let line = BufReader::new(stdout)
        .lines()
        .map(Result::unwrap)
        .find_map(|line| {
            line.find("EXIT_GUARD ")
                .map(|at| line[at + "EXIT_GUARD ".len()..].to_owned())
        })
        .expect("the child printed no EXIT_GUARD line");
    let (pid, dir) = line.split_once(' ').unwrap();
    let pid = pid.strip_prefix("pid=").unwrap().to_owned();
    let dir = dir.strip_prefix("dir=").unwrap().to_owned();
    if mode == "wait" {
        assert!(
            !process_gone(&pid),
            "the server should run while the child lives"
        );
        child.0.kill().unwrap();
    }
    child.0.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    while !process_gone(&pid) || Path::new(&dir).exists() {
        assert!(
            Instant::now() < deadline,
            "after the child ended ({mode}), postgres {pid} still runs or {dir} still exists"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn throwaway_cluster_is_stopped_when_its_process_exits() {
    assert_cleaned_up_after_child("exit");
}

#[test]
fn throwaway_cluster_is_stopped_when_its_process_is_killed() {
    assert_cleaned_up_after_child("wait");
}
