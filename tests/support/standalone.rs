//! `rpcgate` with no config (the standalone default: gateway, embedded
//! locator, demo apps and the `canary` group) as a child process, on
//! given loopback ports so it can be restarted where it was.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::child::bounded;

/// The ports one standalone uses: gateway HTTP, admin, locator.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub http: u16,
    pub admin: u16,
    pub locator: u16,
}

impl Ports {
    /// Three ports free right now (bound to 0 and let go).
    pub fn free() -> Self {
        let listeners: Vec<_> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(listeners);
        Self {
            http: ports[0],
            admin: ports[1],
            locator: ports[2],
        }
    }
}

/// A running standalone; killed when dropped.
pub struct Standalone {
    pub child: Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// Its HOME (a fresh directory, so nothing of the user's is read).
    pub home: PathBuf,
}

impl Standalone {
    /// Starts `rpcgate` with no config on `ports`; returns once its banner
    /// is printed (everything is up then).
    pub async fn start(ports: Ports) -> Self {
        let home = std::env::temp_dir().join(format!(
            "rpcgate-standalone-{}-{}",
            std::process::id(),
            ports.http
        ));
        std::fs::create_dir_all(&home).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rpcgate"))
            .args(["--listen", &format!("127.0.0.1:{}", ports.http)])
            .args(["--admin", &format!("127.0.0.1:{}", ports.admin)])
            .args(["--locator", &format!("127.0.0.1:{}", ports.locator)])
            .args(["--log-level", "warn"])
            .env("HOME", &home)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the rpcgate binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        bounded("the standalone's banner", async {
            loop {
                let line = lines.next_line().await.unwrap().unwrap_or_else(|| {
                    panic!("the standalone exited before its banner (ports {ports:?} taken?)")
                });
                if line.starts_with("Ctrl-C stops it.") {
                    break;
                }
            }
        })
        .await;
        // Keep reading its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            http: SocketAddr::from(([127, 0, 0, 1], ports.http)),
            admin: SocketAddr::from(([127, 0, 0, 1], ports.admin)),
            home,
        }
    }

    /// Kills it (SIGKILL: a crash, the harshest restart) and waits for it
    /// to be gone.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        bounded("the standalone to die", self.child.wait())
            .await
            .unwrap();
    }
}
