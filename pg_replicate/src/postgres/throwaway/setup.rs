//! The steps of [`ThrowawayCluster::start`]: hand the directory to the
//! server's OS user, start the watchdog, `initdb`, certificates,
//! configuration, `pg_ctl start`, roles.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::conf::{conf_quote, pg_hba_conf, OPENSSL_CONFIG};
use super::os::{free_port, read_from, run, tail, write_file, ServerUser};
use super::{
    clean_env, ThrowawayCluster, ThrowawayOptions, ThrowawayRole, Watchdog, HOST, LOG_TAIL_LINES,
    PORT_ATTEMPTS, START_TIMEOUT_SECS, WATCHDOG_SCRIPT,
};
use crate::error::{Error, ErrorKind, Result};

impl ThrowawayCluster {
    pub(super) fn hand_dir_to(&self, user: &ServerUser) -> Result<()> {
        std::os::unix::fs::chown(&self.dir, Some(user.uid), Some(user.gid)).map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                format!(
                    "could not hand {} to the OS user `{}` that runs the server",
                    self.dir.display(),
                    user.name
                ),
                e,
            )
        })?;
        let mut cmd = self.server_command(Path::new("test"));
        cmd.arg("-w").arg(&self.dir);
        run(cmd, "test -w (as the server's OS user)").map_err(|_| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "this process runs as root, so the server runs as the OS user `{}`, but that \
                     user cannot reach {}; point TMPDIR at a directory it can reach, such as /tmp",
                    user.name,
                    self.dir.display()
                ),
            )
        })?;
        Ok(())
    }

    pub(super) fn spawn_watchdog(&self) -> Result<Watchdog> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("pg_replicate-throwaway-watchdog")
            .arg(&self.dir);
        if let Some(user) = &self.run_as {
            cmd.arg("runuser").arg("-u").arg(user).arg("--");
        }
        cmd.arg(self.bin_dir.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.data_dir);
        clean_env(&mut cmd);
        cmd.current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Out of our process group: Ctrl-C or a group kill aimed at
            // this process must not take the watchdog with it.
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                "could not start the `sh` watchdog that stops the throwaway cluster when this \
                 process exits; set ThrowawayOptions::stop_on_process_exit to false to do without",
                e,
            )
        })?;
        let stdin = child.stdin.take();
        Ok(Watchdog { child, stdin })
    }

    pub(super) fn init_db(&self) -> Result<()> {
        let mut cmd = self.server_command(&self.bin_dir.join("initdb"));
        cmd.arg("-D").arg(&self.data_dir).args([
            "-U",
            ThrowawayRole::Superuser.name(),
            "--encoding=UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
        ]);
        run(cmd, "initdb")?;
        Ok(())
    }

    /// Writes a CA and a server certificate (for `localhost` and
    /// 127.0.0.1) into the directory; returns the CA certificate's path.
    pub(super) fn make_certificates(&self) -> Result<PathBuf> {
        let config = self.dir.join("openssl.cnf");
        write_file(&config, OPENSSL_CONFIG)?;
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() & 0x7fff_ffff_ffff_ffff)
            .to_string();
        let steps = [
            (
                "openssl req (CA)",
                "req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
                 -days 3650 -config openssl.cnf -extensions v3_ca \
                 -subj /CN=pg_replicate-throwaway-CA -keyout ca.key -out ca.crt"
                    .to_owned(),
            ),
            (
                "openssl req (server)",
                "req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
                 -config openssl.cnf -subj /CN=localhost -keyout server.key -out server.csr"
                    .to_owned(),
            ),
            (
                "openssl x509 (sign the server certificate)",
                format!(
                    "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial {serial} \
                     -sha256 -days 3650 -extfile openssl.cnf -extensions v3_server \
                     -out server.crt"
                ),
            ),
        ];
        for (what, args) in steps {
            let mut cmd = self.server_command(Path::new("openssl"));
            cmd.args(args.split_whitespace());
            run(cmd, what).map_err(|e| {
                e.context(
                    "could not make the TLS certificates (is the `openssl` command installed?)",
                )
            })?;
        }
        let key = self.dir.join("server.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                format!("could not restrict {} to its owner", key.display()),
                e,
            )
        })?;
        Ok(self.dir.join("ca.crt"))
    }

    pub(super) fn write_config(&self, options: &ThrowawayOptions) -> Result<()> {
        let dir = conf_quote(&self.dir.to_string_lossy());
        let mut conf = String::from("\n# pg_replicate throwaway cluster\n");
        let settings: [(&str, String); 13] = [
            ("listen_addresses", "'127.0.0.1'".to_owned()),
            ("unix_socket_directories", dir),
            ("wal_level", conf_quote(&options.wal_level)),
            ("max_replication_slots", "64".to_owned()),
            ("max_wal_senders", "64".to_owned()),
            ("max_connections", "200".to_owned()),
            ("fsync", "off".to_owned()),
            ("synchronous_commit", "off".to_owned()),
            ("full_page_writes", "off".to_owned()),
            ("shared_buffers", "'128MB'".to_owned()),
            (
                "max_locks_per_transaction",
                options.max_locks_per_transaction.to_string(),
            ),
            ("log_min_messages", "warning".to_owned()),
            ("password_encryption", "'scram-sha-256'".to_owned()),
        ];
        for (name, value) in &settings {
            let _ = writeln!(conf, "{name} = {value}");
        }
        if options.ssl {
            let _ = writeln!(conf, "ssl = on");
            for (name, file) in [
                ("ssl_cert_file", "server.crt"),
                ("ssl_key_file", "server.key"),
            ] {
                let path = self.dir.join(file);
                let _ = writeln!(conf, "{name} = {}", conf_quote(&path.to_string_lossy()));
            }
        }
        for (name, value) in &options.extra_settings {
            let _ = writeln!(conf, "{name} = {value}");
        }
        let path = self.data_dir.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(conf.as_bytes()))
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Io,
                    format!("could not append to {}", path.display()),
                    e,
                )
            })?;
        write_file(&self.data_dir.join("pg_hba.conf"), &pg_hba_conf())
    }

    pub(super) fn start_server(&mut self) -> Result<()> {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port()?;
            let log_start = fs::metadata(&self.log_file).map_or(0, |m| m.len());
            let mut cmd = self.server_command(&pg_ctl);
            cmd.args(["start", "-w", "-t", START_TIMEOUT_SECS, "-D"])
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&self.log_file)
                .arg("-o")
                .arg(format!("-p {port}"));
            // pg_ctl start may leave a server behind even when it fails
            // (timeout); from now on drop tries to stop it.
            self.running = true;
            self.port = port;
            let error = match run(cmd, "pg_ctl start") {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let log = read_from(&self.log_file, log_start);
            let port_taken = log.contains("Address already in use")
                || log.contains("could not create any TCP/IP sockets");
            if port_taken && attempt < PORT_ATTEMPTS {
                continue;
            }
            let _ = self.stop_server();
            self.running = self.data_dir.join("postmaster.pid").exists();
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "the throwaway PostgreSQL server did not start ({}); last lines of its \
                     log:\n{}",
                    error.message().trim_end(),
                    tail(&log, LOG_TAIL_LINES)
                ),
            ));
        }
        Err(Error::new(
            ErrorKind::Io,
            format!("no free TCP port on {HOST} after {PORT_ATTEMPTS} attempts"),
        ))
    }

    pub(super) fn create_roles(&self) -> Result<()> {
        let mut sql = String::new();
        let superuser = ThrowawayRole::Superuser;
        let _ = writeln!(
            sql,
            "ALTER ROLE {} PASSWORD '{}';",
            superuser.name(),
            superuser.password()
        );
        for role in ThrowawayRole::ALL {
            if role == ThrowawayRole::Superuser {
                continue;
            }
            let encryption = if role == ThrowawayRole::Md5 {
                "md5"
            } else {
                "scram-sha-256"
            };
            let _ = writeln!(
                sql,
                "SET password_encryption = '{encryption}';\n\
                 CREATE ROLE {} LOGIN REPLICATION PASSWORD '{}';",
                role.name(),
                role.password()
            );
        }
        sql.push_str(
            "DO $$ BEGIN\n\
             IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pg_read_all_data') THEN\n\
             GRANT pg_read_all_data TO pgr_md5, pgr_password, pgr_trust, pgr_scram;\n\
             END IF;\n\
             END $$;\n",
        );
        self.psql("postgres", &sql)
            .map(drop)
            .map_err(|e| e.context("could not create the roles of the throwaway cluster"))
    }
}
