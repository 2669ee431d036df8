//! Copying a process's stdio between the backend's fds and containerd's stdio URIs (FIFOs,
//! `file://` paths), with close_io, pty resize, and a bounded wait for output to drain.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

use crate::error::{Error, Result};
use crate::sys::fdio::{self, FdIo};
use crate::sys::logger;

/// containerd's view of a process's stdio (empty = not connected).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// One end of a pipe per connected stream: `(shim's ends, process's ends)`, indexed stdin,
/// stdout, stderr (the shim writes stdin and reads the others); `None` where not connected.
pub type PipeEnds = ([Option<OwnedFd>; 3], [Option<OwnedFd>; 3]);

impl StdioPaths {
    /// A pipe for each stream containerd connected.
    pub fn pipes(&self) -> Result<PipeEnds> {
        let mut shim: [Option<OwnedFd>; 3] = [None, None, None];
        let mut process: [Option<OwnedFd>; 3] = [None, None, None];
        for (i, path) in [&self.stdin, &self.stdout, &self.stderr]
            .into_iter()
            .enumerate()
        {
            if path.is_empty() {
                continue;
            }
            let (r, w) = fdio::pipe().map_err(|e| Error::io("pipe", e))?;
            let (s, p) = if i == 0 { (w, r) } else { (r, w) };
            shim[i] = Some(s);
            process[i] = Some(p);
        }
        Ok((shim, process))
    }
}

impl ProcessIo {
    /// The shim's ends of [`StdioPaths::pipes`].
    pub fn pipes(shim: [Option<OwnedFd>; 3]) -> ProcessIo {
        let [stdin, stdout, stderr] = shim;
        ProcessIo::Pipes {
            stdin,
            stdout,
            stderr,
        }
    }
}

/// The shim's ends of a process's stdio, as a backend hands them over.
pub enum ProcessIo {
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    },
    Pty {
        master: OwnedFd,
    },
    Null,
}

/// Live copying for one process.
pub struct IoHandle {
    stdin_close: Mutex<Option<oneshot::Sender<()>>>,
    pty: Option<OwnedFd>,
    drained: watch::Receiver<usize>,
    outputs: usize,
    tasks: Vec<tokio::task::AbortHandle>,
    /// The `binary://` logger, if any.
    logger: Option<u32>,
}

enum Target {
    Fd(OwnedFd),
    File(std::fs::File),
}

/// Where a FIFO or `file://` output URI points (`binary://` is handled by the caller).
fn open_output(uri: &str) -> Result<Target> {
    let path = parse_uri(uri)?;
    let meta = std::fs::metadata(&path);
    let is_fifo = meta
        .as_ref()
        .map(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_fifo()
        })
        .unwrap_or(false);
    if is_fifo {
        let fd = fdio::open_rdwr_nonblock(&path)
            .map_err(|e| Error::io(format!("open stdio fifo {}", path.display()), e))?;
        return Ok(Target::Fd(fd));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("create log dir {}", parent.display()), e))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(format!("open log file {}", path.display()), e))?;
    Ok(Target::File(f))
}

fn parse_uri(uri: &str) -> Result<PathBuf> {
    if let Some(rest) = uri.strip_prefix("file://") {
        return Ok(PathBuf::from(rest));
    }
    if let Some((scheme, _)) = uri.split_once("://") {
        return Err(Error::invalid(format!(
            "stdio URI {uri}: unsupported scheme {scheme}"
        )));
    }
    Ok(PathBuf::from(uri))
}

async fn pump<R, W>(mut r: R, mut w: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let Err(e) = tokio::io::copy(&mut r, &mut w).await {
        log::debug!("stdio copy ended: {e}");
    }
    let _ = w.flush().await;
}

/// How long CloseIO may wait for stdin bytes already in the FIFO to reach the process.
const STDIN_FLUSH: std::time::Duration = std::time::Duration::from_millis(500);

/// Copy what is readable now (each read waits at most a moment: the FIFO may stay open).
async fn forward_buffered<R, W>(r: &mut R, w: &mut W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(std::time::Duration::from_millis(20), r.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                if w.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            _ => break,
        }
    }
    let _ = w.flush().await;
}

async fn pump_to(src: OwnedFd, dst: Target) -> Result<()> {
    let r = FdIo::new(src).map_err(|e| Error::io("stdio source", e))?;
    match dst {
        Target::Fd(fd) => {
            let w = FdIo::new(fd).map_err(|e| Error::io("stdio target", e))?;
            pump(r, w).await;
        }
        Target::File(f) => pump(r, tokio::fs::File::from_std(f)).await,
    }
    Ok(())
}

impl IoHandle {
    /// Connect `io` to containerd's `paths` and start copying. A `binary://` output starts
    /// its logger first (for container `id` in `namespace`, see `sys/logger.rs`).
    pub async fn start(
        paths: &StdioPaths,
        io: ProcessIo,
        id: &str,
        namespace: &str,
    ) -> Result<IoHandle> {
        let binary = [&paths.stdout, &paths.stderr]
            .into_iter()
            .find(|u| u.starts_with("binary://"));
        let mut logger = match binary {
            Some(uri) => Some(logger::start(uri, id, namespace).await?),
            None => None,
        };
        let logger_pid = logger.as_ref().map(|l| l.pid);
        let (drain_tx, drain_rx) = watch::channel(0usize);
        let mut outputs = 0usize;
        let mut tasks = Vec::new();
        let mut spawn_out = |src: OwnedFd, uri: &str, stderr: bool| -> Result<()> {
            let dst = match logger.as_mut() {
                Some(l) if uri.starts_with("binary://") => {
                    let fd = if stderr { &l.stderr } else { &l.stdout };
                    Target::Fd(
                        fd.try_clone()
                            .map_err(|e| Error::io("dup logger pipe", e))?,
                    )
                }
                _ => open_output(uri)?,
            };
            outputs += 1;
            let tx = drain_tx.clone();
            let h = tokio::spawn(async move {
                if let Err(e) = pump_to(src, dst).await {
                    log::warn!("stdio: {e}");
                }
                tx.send_modify(|n| *n += 1);
            });
            tasks.push(h.abort_handle());
            Ok(())
        };
        let mut stdin_close = None;
        let mut pty = None;
        let stdin_sink: Option<OwnedFd> = match io {
            ProcessIo::Null => None,
            ProcessIo::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                if let (Some(fd), false) = (stdout, paths.stdout.is_empty()) {
                    spawn_out(fd, &paths.stdout, false)?;
                }
                if let (Some(fd), false) = (stderr, paths.stderr.is_empty()) {
                    spawn_out(fd, &paths.stderr, true)?;
                }
                stdin
            }
            ProcessIo::Pty { master } => {
                let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| Error::io("dup pty", e));
                if !paths.stdout.is_empty() {
                    spawn_out(dup(&master)?, &paths.stdout, false)?;
                }
                let input = (!paths.stdin.is_empty())
                    .then(|| dup(&master))
                    .transpose()?;
                pty = Some(master);
                input
            }
        };
        if let (Some(sink), false) = (stdin_sink, paths.stdin.is_empty()) {
            let src = fdio::open_read_nonblock(Path::new(&paths.stdin))
                .map_err(|e| Error::io(format!("open stdin fifo {}", paths.stdin), e))?;
            let (tx, rx) = oneshot::channel::<()>();
            stdin_close = Some(tx);
            let h = tokio::spawn(async move {
                let (Ok(mut r), Ok(mut w)) = (FdIo::new(src), FdIo::new(sink)) else {
                    return;
                };
                tokio::select! {
                    _ = pump(&mut r, &mut w) => {}
                    _ = rx => {
                        // The client wrote its last bytes just before CloseIO: forward what is
                        // still buffered in the FIFO (bounded), then close the process's stdin.
                        let _ = tokio::time::timeout(STDIN_FLUSH, forward_buffered(&mut r, &mut w))
                            .await;
                    }
                }
            });
            tasks.push(h.abort_handle());
        }
        // Our copies of the logger's pipes go now: the pumps hold the only write ends, so the
        // logger sees EOF when the output ends.
        drop(logger);
        Ok(IoHandle {
            stdin_close: Mutex::new(stdin_close),
            pty,
            drained: drain_rx,
            outputs,
            tasks,
            logger: logger_pid,
        })
    }

    /// Stop feeding stdin and close the process's stdin.
    pub fn close_stdin(&self) {
        if let Some(tx) = self
            .stdin_close
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
    }

    /// Stop every copy and close our ends (the process is gone or being deleted).
    pub fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(pid) = self.logger {
            logger::terminate(pid);
        }
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let Some(master) = &self.pty else {
            return Err(Error::precondition("process has no terminal"));
        };
        resize_pty(master, width, height)
    }

    pub fn has_pty(&self) -> bool {
        self.pty.is_some()
    }

    /// Wait until every output stream reached EOF, at most `limit`.
    pub async fn wait_drained(&self, limit: Duration) {
        let mut rx = self.drained.clone();
        let want = self.outputs;
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n >= want)).await;
    }
}

pub fn resize_pty(master: &OwnedFd, width: u32, height: u32) -> Result<()> {
    let ws = libc::winsize {
        ws_row: u16::try_from(height).unwrap_or(u16::MAX),
        ws_col: u16::try_from(width).unwrap_or(u16::MAX),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the duration of the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(Error::io("resize pty", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(
            parse_uri("file:///var/log/x").expect("file"),
            PathBuf::from("/var/log/x")
        );
        assert_eq!(
            parse_uri("/run/fifo").expect("path"),
            PathBuf::from("/run/fifo")
        );
        assert!(parse_uri("http://x").is_err());
    }

    #[tokio::test]
    async fn pipes_to_file_and_drain() {
        let dir = std::env::temp_dir().join(format!("pvelxc-stdio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let out = dir.join("out.log");
        let (r, w) = fdio::pipe().expect("pipe");
        let paths = StdioPaths {
            stdout: format!("file://{}", out.display()),
            ..Default::default()
        };
        let h = IoHandle::start(
            &paths,
            ProcessIo::Pipes {
                stdin: None,
                stdout: Some(r),
                stderr: None,
            },
            "c1",
            "ns",
        )
        .await
        .expect("start");
        nix::unistd::write(&w, b"line\n").expect("write");
        drop(w);
        h.wait_drained(Duration::from_secs(5)).await;
        assert_eq!(std::fs::read_to_string(&out).expect("read"), "line\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// containerd's binary logging protocol end to end: the logger gets the container's
    /// stdout on fd 3 and stderr on fd 4, only CONTAINER_ID/CONTAINER_NAMESPACE in its
    /// environment, the URI's query as arguments, and is waited for until it closes fd 5.
    #[tokio::test]
    async fn binary_logger_gets_both_streams() {
        let dir = tempfile::tempdir().expect("dir");
        let script = dir.path().join("logger");
        std::fs::write(
            &script,
            "#!/bin/sh\n\
             echo \"$CONTAINER_ID $CONTAINER_NAMESPACE ${HOME:-nohome} $1=$2\" > \"$2/env\"\n\
             /bin/cat <&3 5>&- > \"$2/out\" &\n\
             /bin/cat <&4 5>&- > \"$2/err\" &\n\
             exec 5>&-\n\
             wait\n",
        )
        .expect("script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let uri = format!("binary://{}?dir={}", script.display(), dir.path().display());
        let (or, ow) = fdio::pipe().expect("pipe");
        let (er, ew) = fdio::pipe().expect("pipe");
        let paths = StdioPaths {
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        };
        let h = IoHandle::start(
            &paths,
            ProcessIo::Pipes {
                stdin: None,
                stdout: Some(or),
                stderr: Some(er),
            },
            "c1",
            "ns1",
        )
        .await
        .expect("start");
        let env = std::fs::read_to_string(dir.path().join("env")).expect("ready means started");
        assert_eq!(
            env.trim(),
            format!("c1 ns1 nohome dir={}", dir.path().display())
        );
        nix::unistd::write(&ow, b"to stdout\n").expect("write");
        nix::unistd::write(&ew, b"to stderr\n").expect("write");
        drop((ow, ew));
        h.wait_drained(Duration::from_secs(5)).await;
        // The logger ends on EOF; its files hold exactly each stream.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let out = std::fs::read_to_string(dir.path().join("out")).unwrap_or_default();
            let err = std::fs::read_to_string(dir.path().join("err")).unwrap_or_default();
            if out == "to stdout\n" && err == "to stderr\n" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "out {out:?} err {err:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_missing_logger_fails_the_start_clearly() {
        let paths = StdioPaths {
            stdout: "binary:///nonexistent/logger".into(),
            ..Default::default()
        };
        let e = IoHandle::start(&paths, ProcessIo::Null, "c1", "ns")
            .await
            .err()
            .expect("no logger");
        assert_eq!(
            e.code(),
            containerd_shim_protos::ttrpc::Code::FAILED_PRECONDITION
        );
        assert!(e.to_string().contains("/nonexistent/logger"), "{e}");
    }
}
