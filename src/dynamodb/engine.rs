//! The embedded engine: dynoxide's database and its own HTTP front, on a thread of their own.
//!
//! dynoxide offers its server as "serve this `TcpListener`", not as a router to mount, so it
//! listens on a loopback port the gateway forwards to ([`super::DynamoDb`]). It runs on one
//! thread with a single-threaded runtime: the database serialises every operation behind one
//! lock and runs it to completion on the calling thread, so the gateway's own workers never
//! block on SQLite, and a second engine thread would only wait for the lock. The TTL sweep
//! runs on the same runtime's blocking pool, on a timer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dynoxide::Database;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::DynamoError;
use super::metrics::{DynamoMetrics, Gauges};
use super::tables::{self, TableSpec, TablesReport};
use crate::apps::chat::config::Synchronous;

/// How long stopping waits for the engine's thread.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The running engine. Dropping it stops the thread without waiting.
pub(crate) struct Engine {
    db: Database,
    addr: SocketAddr,
    path: PathBuf,
    stop: CancellationToken,
    stopped: Option<oneshot::Receiver<()>>,
}

impl Engine {
    /// Opens (or creates) the database at `path`, sets up the declared tables and starts
    /// serving on a loopback port.
    pub(crate) fn start(
        path: &Path,
        synchronous: Synchronous,
        specs: &[TableSpec],
        recreate: bool,
        ttl_interval: Duration,
        metrics: Arc<DynamoMetrics>,
    ) -> Result<(Self, TablesReport), DynamoError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| DynamoError::Open {
                path: path.to_owned(),
                error: e.to_string(),
            })?;
        }
        let path_text = path.to_str().ok_or_else(|| DynamoError::Open {
            path: path.to_owned(),
            error: "the path is not UTF-8".into(),
        })?;
        let db = Database::new(path_text).map_err(|e| DynamoError::Open {
            path: path.to_owned(),
            error: e.to_string(),
        })?;
        if synchronous == Synchronous::Normal {
            // dynoxide's own "normal" settings (it opens with SQLite's default, FULL): in WAL
            // mode a commit has reached the operating system when it returns, so a write that
            // was answered survives the process being killed; no `fsync` per write.
            db.disable_bulk_loading().map_err(|e| DynamoError::Open {
                path: path.to_owned(),
                error: e.to_string(),
            })?;
        }
        let report = tables::ensure_tables(&db, specs, recreate)?;
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("dynamodb-blocking")
            .build()?;
        let stop = CancellationToken::new();
        let (done, stopped) = oneshot::channel();
        let serve_db = db.clone();
        let serve_stop = stop.clone();
        std::thread::Builder::new()
            .name("dynamodb".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            tracing::error!(%error, "the DynamoDB engine cannot listen");
                            return;
                        }
                    };
                    let sweep =
                        sweep_ttl(serve_db.clone(), ttl_interval, metrics, serve_stop.clone());
                    let serve = dynoxide::server::serve_with_shutdown(
                        listener,
                        serve_db,
                        serve_stop.clone().cancelled_owned(),
                    );
                    let (served, ()) = tokio::join!(serve, sweep);
                    if let Err(error) = served {
                        tracing::error!(%error, "the DynamoDB engine stopped");
                    }
                });
                let _ = done.send(());
            })?;
        Ok((
            Engine {
                db,
                addr,
                path: path.to_owned(),
                stop,
                stopped: Some(stopped),
            },
            report,
        ))
    }

    /// The engine's loopback address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `read` on the database on a blocking thread: the database's lock is taken there,
    /// never on a gateway worker. `None` if the blocking task failed.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Database) -> T + Send + 'static,
    ) -> Option<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || read(&db)).await.ok()
    }

    /// The table count and the database's size.
    pub(crate) async fn gauges(&self) -> Option<Gauges> {
        self.read(|db| {
            Some(Gauges {
                tables: db.table_count().ok()? as u64,
                database_bytes: db.db_size_bytes().ok()?,
            })
        })
        .await
        .flatten()
    }

    /// Stops serving (requests under way finish) and waits for the thread, at most
    /// [`STOP_TIMEOUT`].
    pub(crate) async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(stopped) = self.stopped.take()
            && tokio::time::timeout(STOP_TIMEOUT, stopped).await.is_err()
        {
            tracing::warn!("the DynamoDB engine did not stop in time");
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("addr", &self.addr)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Deletes expired items every `interval` until `stop`.
async fn sweep_ttl(
    db: Database,
    interval: Duration,
    metrics: Arc<DynamoMetrics>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let db = db.clone();
        match tokio::task::spawn_blocking(move || db.sweep_ttl()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(deleted)) => {
                metrics
                    .ttl_deleted
                    .fetch_add(deleted as u64, Ordering::Relaxed);
                tracing::debug!(deleted, "TTL sweep deleted expired items");
            }
            Ok(Err(error)) => {
                metrics.ttl_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "TTL sweep failed");
            }
            Err(error) => {
                metrics.ttl_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "TTL sweep task failed");
            }
        }
    }
}
