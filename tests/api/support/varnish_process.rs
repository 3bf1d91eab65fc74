//! A private Varnish 7 with the xkey and var modules, on a port below the ephemeral range,
//! running the shipped `deploy/varnish/default.vcl` with only its backend pointed at a test
//! server. Tests using it skip (with a message) when `varnishd` or the modules are missing;
//! `.ci/run` installs Debian's `varnish` and `varnish-modules`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::helpers::eventually;
use crate::support::ports::restartable_port;

pub struct VarnishProcess {
    child: Option<Child>,
    pub port: u16,
    vcl: PathBuf,
    workdir: tempfile::TempDir,
}

const SHIPPED_VCL: &str = include_str!("../../../deploy/varnish/default.vcl");

pub fn installed() -> bool {
    let varnishd = Command::new("varnishd")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let modules = [
        "/usr/lib/x86_64-linux-gnu/varnish/vmods",
        "/usr/lib/varnish/vmods",
    ]
    .iter()
    .any(|dir| std::path::Path::new(dir).join("libvmod_xkey.so").exists());
    varnishd && modules
}

/// A port for a Varnish that is started later (the server's purge address names it first).
pub fn reserve_port() -> Option<u16> {
    if !installed() {
        eprintln!("varnishd with varnish-modules is not installed: skipping this edge test");
        return None;
    }
    Some(restartable_port())
}

impl VarnishProcess {
    /// Starts Varnish on `port` in front of `backend`, with the shipped VCL.
    pub async fn start(port: u16, backend: SocketAddr) -> VarnishProcess {
        let workdir = tempfile::tempdir().expect("varnish directory");
        let vcl = workdir.path().join("default.vcl");
        let pointed = SHIPPED_VCL
            .replace(
                ".host = \"app\";",
                &format!(".host = \"{}\";", backend.ip()),
            )
            .replace(
                ".port = \"8000\";",
                &format!(".port = \"{}\";", backend.port()),
            );
        assert_ne!(
            pointed, SHIPPED_VCL,
            "the shipped VCL names its backend as expected"
        );
        std::fs::write(&vcl, pointed).expect("write the VCL");
        let mut varnish = VarnishProcess {
            child: None,
            port,
            vcl,
            workdir,
        };
        varnish.launch().await;
        varnish
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn answers(&self) -> bool {
        let probe = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            // A purge without tags: answered by the VCL itself (400), and it purges nothing,
            // so a probe Varnish takes up late cannot overtake a test's first fetch.
            stream
                .write_all(b"PURGE / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
                .await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            Ok::<bool, std::io::Error>(answer.starts_with(b"HTTP/1.1 400"))
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(500), probe).await,
            Ok(Ok(true))
        )
    }

    async fn launch(&mut self) {
        let instance = self.workdir.path().join("instance");
        let child = Command::new("varnishd")
            .args(["-F", "-j", "none", "-s", "malloc,64m"])
            .arg("-a")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("-f")
            .arg(&self.vcl)
            .arg("-n")
            .arg(&instance)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start varnishd");
        self.child = Some(child);
        let answered = eventually(Duration::from_secs(30), || self.answers()).await;
        assert!(answered, "varnishd did not start on port {}", self.port);
    }

    /// Stops Varnish (its cache is lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }
}

impl Drop for VarnishProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
