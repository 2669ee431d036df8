//! The task server: the service on the socket `start` bound (handed over as stdin), until
//! Shutdown.

use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::Flags;
use containerd_shim_protos::shim_async::create_task;
use containerd_shim_protos::ttrpc::r#async::transport::Listener;
use containerd_shim_protos::ttrpc::r#async::Server;

use super::socket_path;
use crate::error::{Error, Result};
use crate::service::{Events, Service};

pub fn run(flags: &Flags) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the async runtime", e))?;
    rt.block_on(serve(flags))
}

async fn serve(flags: &Flags) -> Result<()> {
    if flags.socket.is_empty() {
        return Err(Error::invalid("no -socket to serve"));
    }
    let ttrpc_address =
        std::env::var("TTRPC_ADDRESS").map_err(|_| Error::invalid("TTRPC_ADDRESS is not set"))?;
    // The shim log containerd reads (the bundle's `log` fifo).
    containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
        .map_err(|e| Error::internal(format!("logger: {e}")))?;
    // Orphans of the containers' processes are reparented to us, and reaped (sys::reaper).
    nix::sys::prctl::set_child_subreaper(true)?;
    crate::sys::reaper::start().map_err(|e| Error::io("watch SIGCHLD", e))?;
    ignore_termination_signals()?;

    let exit = Arc::new(ExitSignal::default());
    let service = Service::new(
        flags.namespace.clone(),
        Arc::new(Events::new(ttrpc_address, flags.namespace.clone())),
        exit.clone(),
    );
    let listener = match inherited_listener() {
        Some(l) => l,
        None => bind(&flags.socket)?,
    };
    let listener = Listener::try_from(listener).map_err(|e| Error::io("ttrpc listener", e))?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(create_task(Arc::new(service)));
    server
        .start()
        .await
        .map_err(|e| Error::internal(format!("ttrpc server: {e}")))?;
    // A `start` that waits for its server reads our stdout until it closes.
    let _ = nix::unistd::dup2_stdout(std::io::stderr().as_fd());
    log::info!("serving {}", flags.socket);
    exit.wait().await;
    log::info!("shutting down");
    let _ = server.shutdown().await;
    let _ = std::fs::remove_file(socket_path(&flags.socket));
    Ok(())
}

/// The listening socket `start` bound, passed as stdin; None when stdin is anything else.
fn inherited_listener() -> Option<UnixListener> {
    use nix::sys::socket::{getsockopt, sockopt::AcceptConn};
    let stdin = std::io::stdin();
    if !getsockopt(&stdin.as_fd(), AcceptConn).unwrap_or(false) {
        return None;
    }
    let fd = nix::unistd::dup(stdin.as_fd()).ok()?;
    // Stdin is /dev/null from here on.
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(null.as_fd());
    }
    Some(UnixListener::from(fd))
}

/// Bind `address` ourselves (a server started without a socket handed over).
fn bind(address: &str) -> Result<UnixListener> {
    let path = socket_path(address);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    UnixListener::bind(path).map_err(|e| Error::io(format!("bind {}", path.display()), e))
}

/// SIGTERM and SIGINT do not end the server (containerd ends it with Shutdown, or SIGKILL);
/// they are logged.
fn ignore_termination_signals() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
        let mut s = signal(kind).map_err(|e| Error::io("signal handler", e))?;
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                log::debug!("ignored signal {}", kind.as_raw_value());
            }
        });
    }
    Ok(())
}
