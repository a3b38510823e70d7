//! The Lingxi node: the network edges (SIP transports, HTTP API, Prometheus metrics), start-up
//! from a [`lingxi_config::Config`] and graceful shutdown.
//!
//! # Layout
//! - `auth`: users, sessions, API keys and roles: [`auth::Auth::check`] for every route.
//! - `transport`: SIP over UDP and TCP sockets, feeding the transaction layer.
//! - `http`: the JSON API under `/api/v1`, its OpenAPI document, `/metrics`, `/healthz`.
//! - `console`: the agent console's static files (embedded from `node/console/`) at `/console/`.
//! - [`kb`]: knowledge-base search (Chinese and English full-text index) for the console.
//! - [`web`]: the WebRTC gateway: browser agents as SIP phones of this node (`/api/v1/ws`) and
//!   web callers ("call us", `/api/v1/webcall/ws`).
//! - `telemetry`: logging set-up and the Prometheus recorder.
//! - `cluster`: cluster mode (`[cluster] enabled`): the Raft log on sled and TCP, waiting for a
//!   leader, announcing the node; `cluster::client`, the HTTP client of `lingxi cluster …`.
//! - [`Node`]: wires storage, media, actors and transports together and stops them in order.
#![warn(missing_docs, unreachable_pub, unsafe_code)]

pub mod auth;
pub mod cluster;
pub mod console;
mod http;
pub mod kb;
pub mod telemetry;
pub mod transport;
pub mod web;

use anyhow::Context as _;
use lingxi_actors::Switch;
use lingxi_actors::sip::transaction::{Endpoint, EndpointConfig};
use lingxi_cluster::{Log, ReplicatedLog, SledStore, SpaceGuard};
use lingxi_config::Config;
use lingxi_media::MediaEngine;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use transport::SipTransports;

/// Entries between snapshots of the state machine (the log is compacted at each).
const SNAPSHOT_EVERY: u64 = 20_000;

/// A running node.
pub struct Node {
    /// The switch (actors, log, media).
    switch: Arc<Switch>,
    /// The SIP sockets.
    transports: Arc<SipTransports>,
    /// Where the HTTP API listens.
    http_addr: SocketAddr,
    /// Cancelled to stop transports and the HTTP server.
    shutdown: CancellationToken,
    /// The HTTP server task.
    http_task: tokio::task::JoinHandle<()>,
    /// The Raft log and transport, in cluster mode.
    raft: Option<cluster::RaftParts>,
    /// Token checks and logins, shared with every router that needs them.
    auth: auth::Auth,
}

impl Node {
    /// Starts a node: opens storage in `node.data_dir`, restores state, binds SIP and HTTP.
    ///
    /// In cluster mode (`cluster.enabled`) the state is the Raft log (`<data_dir>/raft`, CDRs
    /// in `<data_dir>/state`); start-up waits, without a time limit, for a Raft leader before
    /// provisioning (a majority of a bootstrapped cluster must be up, a joining node must be
    /// added), and once SIP and HTTP are bound the node announces itself in the background.
    pub async fn start(config: Config) -> anyhow::Result<Node> {
        let config = Arc::new(config);
        let prometheus = telemetry::prometheus();
        let (log, raft) = if config.cluster.enabled {
            let (log, parts) = cluster::open_raft(&config).await?;
            // Provisioning proposes to the log: it needs a leader.
            cluster::wait_for_leader(&config, &parts.raft).await;
            (log, Some(parts))
        } else {
            let state_dir = config.node.data_dir.join("state");
            std::fs::create_dir_all(&state_dir).with_context(|| {
                format!("cannot create the data directory {}", state_dir.display())
            })?;
            let guard = SpaceGuard::new(&config.node.data_dir, config.node.min_free_disk_mb);
            guard.check().context("not starting")?;
            let store = SledStore::open(&state_dir)
                .with_context(|| format!("cannot open storage in {}", state_dir.display()))?
                .with_guard(guard);
            let log = Log::Local(
                ReplicatedLog::open(Arc::new(store), SNAPSHOT_EVERY)
                    .context("cannot restore state")?,
            );
            (log, None)
        };
        let media = MediaEngine::new(&config.media).context("cannot set up media")?;
        let switch = Switch::start(config.clone(), log, media, config.debug.fault_injection)
            .await
            .context("cannot start the switch's actors")?;
        let transports = SipTransports::bind(&config.sip)
            .await
            .context("cannot bind SIP transports")?;
        let endpoint = Endpoint::new(
            EndpointConfig::from_section(&config.sip),
            transports.clone(),
            switch.transaction_user(),
        );
        switch.attach_endpoint(endpoint.clone());
        let shutdown = CancellationToken::new();
        transports.start(endpoint, shutdown.child_token());
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
        let http_addr = listener.local_addr()?;
        let auth = auth::Auth::new(switch.log().clone(), &config.auth)?;
        auth::spawn_first_admin(switch.log().clone(), config.clone(), shutdown.child_token())?;
        let mut app =
            http::router(switch.clone(), prometheus, auth.clone()).merge(console::router());
        match (config.web.enabled, transports.udp_addr()) {
            (true, Some(node_sip)) => {
                let gateway = web::Gateway::start(
                    config.clone(),
                    switch.clone(),
                    node_sip,
                    shutdown.child_token(),
                )
                .await?;
                app = app.merge(web::router(gateway, auth.clone()));
            }
            (true, None) => {
                tracing::warn!("web gateway off: it needs SIP over UDP (sip.enable_udp)");
            }
            (false, _) => {}
        }
        let token = shutdown.child_token();
        let http_task = tokio::spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(token.cancelled_owned())
            .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });
        if raft.is_some() {
            cluster::spawn_announce(
                switch.clone(),
                transports.udp_addr(),
                transports.tcp_addr(),
                Some(http_addr),
                shutdown.child_token(),
            );
        }
        tracing::info!(
            node = %config.node.id,
            sip_udp = ?transports.udp_addr(),
            sip_tcp = ?transports.tcp_addr(),
            http = %http_addr,
            raft = ?raft.as_ref().map(|r| r.addr),
            "lingxi node started"
        );
        Ok(Node {
            switch,
            transports,
            http_addr,
            shutdown,
            http_task,
            raft,
            auth,
        })
    }

    /// The SIP UDP address bound.
    pub fn sip_udp_addr(&self) -> Option<SocketAddr> {
        self.transports.udp_addr()
    }

    /// The SIP TCP address bound.
    pub fn sip_tcp_addr(&self) -> Option<SocketAddr> {
        self.transports.tcp_addr()
    }

    /// The HTTP address bound.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the Raft transport listens (cluster mode only).
    pub fn raft_addr(&self) -> Option<SocketAddr> {
        self.raft.as_ref().map(|r| r.addr)
    }

    /// Token checks and logins (for routers merged beside the API, e.g. the web gateway).
    pub fn auth(&self) -> &auth::Auth {
        &self.auth
    }

    /// Resolves if this node's replicated log failed for good (cluster mode: the Raft loop
    /// stopped on a storage error), with the error; never on a single node.
    pub async fn failed(&self) -> String {
        match &self.raft {
            Some(r) => r.raft.failed().await,
            None => std::future::pending().await,
        }
    }

    /// The switch, for in-process tests and tools.
    pub fn switch(&self) -> &Arc<Switch> {
        &self.switch
    }

    /// Graceful shutdown: BYE to every call (CDR `switch.shutdown`), state flushed, sockets closed.
    pub async fn shutdown(self, grace: Duration) {
        tracing::info!("shutting down: ending live calls");
        self.switch.shutdown(grace).await;
        // Give the BYEs a moment to leave before the sockets close.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.shutdown.cancel();
        let _ = self.http_task.await;
        if let Some(r) = self.raft {
            // After the switch: ending calls proposes their CDRs to the log.
            r.raft.shutdown().await;
            r.transport_stop.cancel();
        }
        tracing::info!("stopped");
    }
}
