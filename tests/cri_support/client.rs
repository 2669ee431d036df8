//! A blocking CRI (runtime.v1) client over a unix socket: the `k8s-cri` crate's tonic clients
//! driven by a private current-thread tokio runtime, every call bounded by a timeout.
//!
//! Standalone (no dependency on `tests/common`) so that `examples/cri-bench.rs` can include it
//! with `#[path]`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

#[allow(unused_imports)] // used by tests/cri_support, not by examples/cri-bench
pub use k8s_cri::v1;

/// Default bound for one CRI call (RunPodSandbox includes CNI setup and a shim start).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

pub struct CriClient {
    rt: tokio::runtime::Runtime,
    rs: RuntimeServiceClient<Channel>,
    is: ImageServiceClient<Channel>,
    sock: PathBuf,
    pub timeout: Duration,
}

fn connect_channel(rt: &tokio::runtime::Runtime, sock: &Path) -> Result<Channel, String> {
    let path = sock.to_path_buf();
    let fut = async move {
        Endpoint::try_from("http://[::]:50051")
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(10))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
                }
            }))
            .await
            .map_err(|e| format!("{e:?}"))
    };
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), fut).await })
        .map_err(|_| format!("connecting to {} timed out", sock.display()))?
}

macro_rules! rpc {
    ($(#[$m:meta])* $name:ident, $svc:ident, $req:ty, $resp:ty) => {
        $(#[$m])*
        pub fn $name(&mut self, req: $req) -> Result<$resp, tonic::Status> {
            let t = self.timeout;
            let fut = self.$svc.$name(req);
            match self.rt.block_on(async { tokio::time::timeout(t, fut).await }) {
                Ok(r) => r.map(|r| r.into_inner()),
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "CRI {} did not answer within {:?}",
                    stringify!($name),
                    t
                ))),
            }
        }
    };
}

impl CriClient {
    /// Connect to the CRI service on containerd's socket.
    pub fn connect(sock: &Path) -> Result<CriClient, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let ch = connect_channel(&rt, sock)?;
        Ok(CriClient {
            rs: RuntimeServiceClient::new(ch.clone()),
            is: ImageServiceClient::new(ch),
            rt,
            sock: sock.to_path_buf(),
            timeout: CALL_TIMEOUT,
        })
    }

    /// A fresh connection (after a containerd restart).
    pub fn reconnect(&mut self) -> Result<(), String> {
        let ch = connect_channel(&self.rt, &self.sock)?;
        self.rs = RuntimeServiceClient::new(ch.clone());
        self.is = ImageServiceClient::new(ch);
        Ok(())
    }

    rpc!(version, rs, VersionRequest, VersionResponse);
    rpc!(status, rs, StatusRequest, StatusResponse);
    rpc!(
        run_pod_sandbox,
        rs,
        RunPodSandboxRequest,
        RunPodSandboxResponse
    );
    rpc!(
        stop_pod_sandbox,
        rs,
        StopPodSandboxRequest,
        StopPodSandboxResponse
    );
    rpc!(
        remove_pod_sandbox,
        rs,
        RemovePodSandboxRequest,
        RemovePodSandboxResponse
    );
    rpc!(
        pod_sandbox_status,
        rs,
        PodSandboxStatusRequest,
        PodSandboxStatusResponse
    );
    rpc!(
        list_pod_sandbox,
        rs,
        ListPodSandboxRequest,
        ListPodSandboxResponse
    );
    rpc!(
        create_container,
        rs,
        CreateContainerRequest,
        CreateContainerResponse
    );
    rpc!(
        start_container,
        rs,
        StartContainerRequest,
        StartContainerResponse
    );
    rpc!(
        stop_container,
        rs,
        StopContainerRequest,
        StopContainerResponse
    );
    rpc!(
        remove_container,
        rs,
        RemoveContainerRequest,
        RemoveContainerResponse
    );
    rpc!(
        list_containers,
        rs,
        ListContainersRequest,
        ListContainersResponse
    );
    rpc!(
        container_status,
        rs,
        ContainerStatusRequest,
        ContainerStatusResponse
    );
    rpc!(
        update_container_resources,
        rs,
        UpdateContainerResourcesRequest,
        UpdateContainerResourcesResponse
    );
    rpc!(exec_sync, rs, ExecSyncRequest, ExecSyncResponse);
    rpc!(
        container_stats,
        rs,
        ContainerStatsRequest,
        ContainerStatsResponse
    );
    rpc!(
        list_container_stats,
        rs,
        ListContainerStatsRequest,
        ListContainerStatsResponse
    );
    rpc!(image_status, is, ImageStatusRequest, ImageStatusResponse);
    rpc!(list_images, is, ListImagesRequest, ListImagesResponse);

    // ---- convenience wrappers (errors are returned, callers decide) ----

    pub fn image_present(&mut self, image: &str) -> bool {
        self.image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .map(|r| r.image.is_some())
        .unwrap_or(false)
    }

    pub fn run_pod(
        &mut self,
        config: &PodSandboxConfig,
        handler: &str,
    ) -> Result<String, tonic::Status> {
        self.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_string(),
        })
        .map(|r| r.pod_sandbox_id)
    }

    pub fn create_ctr(
        &mut self,
        pod_id: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> Result<String, tonic::Status> {
        self.create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(pod_config.clone()),
        })
        .map(|r| r.container_id)
    }

    pub fn start_ctr(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.start_container(StartContainerRequest {
            container_id: id.to_string(),
        })
        .map(|_| ())
    }

    pub fn stop_ctr(&mut self, id: &str, timeout_s: i64) -> Result<(), tonic::Status> {
        self.stop_container(StopContainerRequest {
            container_id: id.to_string(),
            timeout: timeout_s,
        })
        .map(|_| ())
    }

    pub fn remove_ctr(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.remove_container(RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .map(|_| ())
    }

    pub fn stop_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .map(|_| ())
    }

    pub fn remove_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .map(|_| ())
    }

    pub fn ctr_status(
        &mut self,
        id: &str,
        verbose: bool,
    ) -> Result<ContainerStatusResponse, tonic::Status> {
        self.container_status(ContainerStatusRequest {
            container_id: id.to_string(),
            verbose,
        })
    }

    pub fn pod_status(&mut self, id: &str) -> Result<PodSandboxStatusResponse, tonic::Status> {
        self.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        })
    }

    pub fn exec(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout_s: i64,
    ) -> Result<ExecSyncResponse, tonic::Status> {
        self.exec_sync(ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout_s,
        })
    }

    pub fn pods(&mut self) -> Result<Vec<PodSandbox>, tonic::Status> {
        self.list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .map(|r| r.items)
    }

    pub fn containers(&mut self) -> Result<Vec<Container>, tonic::Status> {
        self.list_containers(ListContainersRequest { filter: None })
            .map(|r| r.containers)
    }
}

/// A pod config with the fields the tests vary.
pub fn pod_config(
    name: &str,
    uid: &str,
    hostname: &str,
    log_dir: &Path,
    cgroup_parent: &str,
    host_network: bool,
) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: uid.to_string(),
            namespace: "pvelxc-test".to_string(),
            attempt: 0,
        }),
        hostname: hostname.to_string(),
        log_directory: log_dir.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_string(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: if host_network {
                        NamespaceMode::Node as i32
                    } else {
                        NamespaceMode::Pod as i32
                    },
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container config running `cmd` from `image`, logging to `<pod log dir>/<name>.log`.
pub fn container_config(name: &str, image: &str, cmd: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_shares: 256,
                memory_limit_in_bytes: 128 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
