//! Starting the servers a driver measures: `countersign serve` child processes on 127.0.0.1,
//! on a temporary SQLite data directory or on a fresh PostgreSQL database (several processes
//! on one database are replicas), ready (`/readyz`) before they are used, and killed (the
//! database dropped) when the group is dropped.
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a server may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the servers keep their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Backend, String> {
        match s.trim() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            other => Err(format!("unknown backend {other:?}: use sqlite or postgres")),
        }
    }
}

/// The backend options every driver takes.
#[derive(clap::Args, Debug, Clone)]
pub struct BackendArgs {
    /// Backends to measure, one after the other in the same run: `sqlite` (a temporary data
    /// directory) and `postgres` (one replica, then two replicas on one database).
    #[arg(long, value_delimiter = ',', default_value = "sqlite")]
    pub backends: Vec<Backend>,
    /// The PostgreSQL server for `--backends postgres` (a `postgres://` URL; a fresh database
    /// is created on it for every server group). Default: `COUNTERSIGN_TEST_DATABASE_URL`.
    #[arg(long)]
    pub postgres_url: Option<String>,
}

impl BackendArgs {
    /// The server groups to measure, in order: SQLite alone; PostgreSQL with one replica and,
    /// when `multi` (the driver can spread its load), with two.
    pub fn groups(&self, multi: bool) -> Vec<Group> {
        let mut groups = Vec::new();
        for &backend in &self.backends {
            let counts: &[usize] = match backend {
                Backend::Sqlite => &[1],
                Backend::Postgres if multi => &[1, 2],
                Backend::Postgres => &[1],
            };
            for &replicas in counts {
                let group = Group { backend, replicas };
                if !groups.contains(&group) {
                    groups.push(group);
                }
            }
        }
        groups
    }

    /// The PostgreSQL base URL, when a group needs it.
    pub fn postgres_base(&self) -> Result<Option<String>> {
        if !self.backends.contains(&Backend::Postgres) {
            return Ok(None);
        }
        let url = self
            .postgres_url
            .clone()
            .or_else(|| std::env::var("COUNTERSIGN_TEST_DATABASE_URL").ok())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "--backends postgres needs --postgres-url or COUNTERSIGN_TEST_DATABASE_URL \
                     (e.g. run under scripts/with-postgres)"
                )
            })?;
        Ok(Some(url))
    }
}

/// One configuration to measure: a backend and how many server processes share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    pub backend: Backend,
    pub replicas: usize,
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.backend {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        };
        if self.replicas > 1 {
            write!(f, "{name} x{}", self.replicas)
        } else {
            f.write_str(name)
        }
    }
}

/// How to start a group of servers.
pub struct Spec<'a> {
    pub bin: &'a Path,
    pub group: Group,
    /// The PostgreSQL base URL (required for `Backend::Postgres`).
    pub postgres_base: Option<&'a str>,
    /// `COUNTERSIGN_BOOTSTRAP_ADMIN_KEY` of every process.
    pub admin_key: &'a str,
    /// Environment of every process, after the common settings (log level, limits off).
    pub env: Vec<(String, String)>,
    /// Where the temporary directory goes (default: the system temp dir).
    pub dir_parent: Option<&'a Path>,
}

/// One server process.
pub struct Replica {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub log: PathBuf,
    pub data_dir: PathBuf,
}

impl Replica {
    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The exit status, when the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// A running group: its processes, killed on drop, and its database, dropped after them.
pub struct Servers {
    pub group: Group,
    pub replicas: Vec<Replica>,
    database: Option<Database>,
    // Removed after the children are killed (fields drop after `Drop::drop`).
    dir: tempfile::TempDir,
}

struct Database {
    admin_url: String,
    name: String,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        if let Some(db) = &self.database {
            let _ = psql(
                &db.admin_url,
                &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", db.name),
            );
        }
    }
}

impl Servers {
    /// Starts the group's processes (all at once: migrations and bootstrap tolerate each
    /// other) and waits until every one answers `/readyz`.
    pub async fn start(spec: Spec<'_>) -> Result<Servers> {
        let dir = match spec.dir_parent {
            Some(parent) => tempfile::Builder::new()
                .prefix("countersign-bench-")
                .tempdir_in(parent)?,
            None => tempfile::Builder::new()
                .prefix("countersign-bench-")
                .tempdir()?,
        };
        let mut database = None;
        let mut env = vec![
            (
                "COUNTERSIGN_BOOTSTRAP_ADMIN_KEY".to_string(),
                spec.admin_key.to_string(),
            ),
            ("COUNTERSIGN_LOG__LEVEL".into(), "warn".into()),
            // One driver on one address is the whole load: rate limits and the pending cap
            // would measure themselves.
            ("COUNTERSIGN_LIMITS__PER_KEY_PER_SECOND".into(), "0".into()),
            ("COUNTERSIGN_LIMITS__PER_IP_PER_SECOND".into(), "0".into()),
            (
                "COUNTERSIGN_LIMITS__MAX_PENDING_PER_AGENT".into(),
                "0".into(),
            ),
        ];
        match spec.group.backend {
            Backend::Sqlite => {
                ensure!(spec.group.replicas == 1, "SQLite runs one server process");
            }
            Backend::Postgres => {
                let base = spec
                    .postgres_base
                    .ok_or_else(|| anyhow!("no PostgreSQL URL"))?;
                let name = format!(
                    "countersign_bench_{}_{}",
                    std::process::id(),
                    rand::random::<u32>()
                );
                psql(base, &format!("CREATE DATABASE \"{name}\""))?;
                env.push((
                    "COUNTERSIGN_DATABASE_URL".into(),
                    with_database(base, &name)?,
                ));
                database = Some(Database {
                    admin_url: base.to_string(),
                    name,
                });
            }
        }
        env.extend(spec.env);
        let mut servers = Servers {
            group: spec.group,
            replicas: Vec::new(),
            database,
            dir,
        };
        for i in 0..spec.group.replicas.max(1) {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let log = servers.dir.path().join(format!("server-{i}.log"));
            let data_dir = servers.dir.path().join(format!("data-{i}"));
            let child = Command::new(spec.bin)
                .arg("serve")
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--data-dir")
                .arg(&data_dir)
                .env_remove("RUST_LOG")
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .with_context(|| format!("cannot start {}", spec.bin.display()))?;
            servers.replicas.push(Replica {
                pid: child.id(),
                child,
                addr,
                log,
                data_dir,
            });
        }
        for r in &mut servers.replicas {
            wait_ready(r).await?;
        }
        Ok(servers)
    }

    /// Every replica's `http://127.0.0.1:<port>`.
    pub fn bases(&self) -> Vec<String> {
        self.replicas.iter().map(Replica::base).collect()
    }

    /// Every replica's address.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.replicas.iter().map(|r| r.addr).collect()
    }

    /// The first replica, where drivers set up their principals.
    pub fn first(&self) -> &Replica {
        &self.replicas[0]
    }

    /// The last lines of every replica's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for r in &self.replicas {
            let t = tail(&r.log, lines);
            if !t.trim().is_empty() {
                if self.replicas.len() > 1 {
                    out.push_str(&format!("[{}]\n", r.addr));
                }
                out.push_str(&t);
                out.push('\n');
            }
        }
        out
    }
}

async fn wait_ready(r: &mut Replica) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = r.child.try_wait()? {
            bail!(
                "the server exited with {status} before it was ready:\n{}",
                tail(&r.log, 20)
            );
        }
        if ready(r.addr).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "the server was not ready within {READY_TIMEOUT:?}:\n{}",
        tail(&r.log, 20)
    )
}

/// Whether `GET /readyz` answers 200.
async fn ready(addr: SocketAddr) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(true))
    )
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `base` with its database name replaced by `name` (the query string kept).
fn with_database(base: &str, name: &str) -> Result<String> {
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| anyhow!("not a postgres:// URL: {base}"))?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut url = format!("{scheme}://{authority}/{name}");
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    Ok(url)
}

/// `psql` on PATH, or the newest one of Debian's PostgreSQL packages.
fn psql_bin() -> PathBuf {
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("psql"))
        .find(|p| p.is_file());
    if let Some(p) = in_path {
        return p;
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin/psql");
            bin.is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map_or_else(|| PathBuf::from("psql"), |(_, p)| p)
}

fn psql(url: &str, sql: &str) -> Result<()> {
    let out = Command::new(psql_bin())
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .stdin(Stdio::null())
        .output()
        .context("cannot run psql (install PostgreSQL's client)")?;
    ensure!(
        out.status.success(),
        "psql `{sql}` failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "b").unwrap(),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("postgres://u:p@h/x?sslmode=disable", "b").unwrap(),
            "postgres://u:p@h/b?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:1", "b").unwrap(),
            "postgres://h:1/b"
        );
    }

    #[test]
    fn postgres_runs_one_and_two_replicas_when_the_load_can_spread() {
        let args = BackendArgs {
            backends: vec![Backend::Sqlite, Backend::Postgres],
            postgres_url: None,
        };
        let names: Vec<String> = args.groups(true).iter().map(Group::to_string).collect();
        assert_eq!(names, ["SQLite", "PostgreSQL", "PostgreSQL x2"]);
        assert_eq!(args.groups(false).len(), 2);
    }
}
