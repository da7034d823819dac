//! The deploy worker: runs queued deploy jobs.
//!
//! Jobs live in the database, not in memory: a `POST /api/deploy` commits a
//! `queued` row, then wakes the worker. The worker claims jobs atomically
//! (on PostgreSQL with `FOR UPDATE SKIP LOCKED`), so any number of instances
//! share the queue and a job queued on a stopped instance is run by another,
//! or by this one after a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, broadcast, watch};

use crate::response_cache::{ResponseCache, tags};
use crate::store::{Deploy, DeployStatus, Store};

/// Jobs run at once per instance.
const CONCURRENCY: u32 = 4;
/// How often the worker looks for jobs queued by other instances.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// A job `running` this long has lost its worker.
const STALE_AFTER: Duration = Duration::from_secs(600);

/// Handle to the deploy worker.
#[derive(Debug, Clone)]
pub(crate) struct DeployQueue {
    wake: Arc<Notify>,
    events: broadcast::Sender<Deploy>,
    stop: watch::Sender<bool>,
    slots: Arc<Semaphore>,
}

impl DeployQueue {
    /// Starts the worker on the current runtime.
    pub(crate) fn start(store: Arc<dyn Store>, cache: ResponseCache, duration: Duration) -> Self {
        let (events, _) = broadcast::channel(256);
        let (stop, stopped) = watch::channel(false);
        let queue =
            Self { wake: Arc::new(Notify::new()), events, stop, slots: Arc::new(Semaphore::new(CONCURRENCY as usize)) };
        tokio::spawn(queue.clone().run(store, cache, duration, stopped));
        queue
    }

    /// Tells the worker a job was queued.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Every change of a job's state, as it happens.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Deploy> {
        self.events.subscribe()
    }

    /// Stops claiming jobs and waits for the running ones to end.
    pub(crate) async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let _ = self.slots.acquire_many(CONCURRENCY).await;
    }

    async fn run(
        self,
        store: Arc<dyn Store>,
        cache: ResponseCache,
        duration: Duration,
        mut stopped: watch::Receiver<bool>,
    ) {
        let now = crate::unix_now();
        match store.fail_stale_deploys(now - STALE_AFTER.as_secs() as i64, now).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(jobs = n, "marked deploys abandoned by a stopped worker as failed"),
            Err(err) => tracing::warn!(error = %err, "could not check for abandoned deploys"),
        }
        loop {
            if *stopped.borrow() {
                return;
            }
            // Claim while there are free slots and queued jobs.
            loop {
                let Ok(permit) = self.slots.clone().try_acquire_owned() else { break };
                match store.claim_deploy(crate::unix_now()).await {
                    Ok(Some(job)) => {
                        let _ = self.events.send(job.clone());
                        let (store, cache, events) = (store.clone(), cache.clone(), self.events.clone());
                        tokio::spawn(async move {
                            run_job(&*store, &cache, &events, job, duration).await;
                            drop(permit);
                        });
                    }
                    Ok(None) => break,
                    Err(err) => {
                        tracing::warn!(error = %err, "could not claim a deploy job");
                        break;
                    }
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL_EVERY) => {}
                _ = stopped.changed() => {}
            }
        }
    }
}

async fn run_job(
    store: &dyn Store,
    cache: &ResponseCache,
    events: &broadcast::Sender<Deploy>,
    job: Deploy,
    duration: Duration,
) {
    tracing::info!(job = job.id, project = job.project_id, environment = %job.environment, "deploy started");
    tokio::time::sleep(duration).await;
    let message = format!("deployed to {} in {}", job.environment, humantime::format_duration(duration));
    match store.finish_deploy(job.id, DeployStatus::Succeeded, message, crate::unix_now()).await {
        Ok(done) => {
            tracing::info!(job = done.id, "deploy succeeded");
            // The stats summary counts deploys by status.
            cache.invalidate(&[tags::STATS.to_owned()]).await;
            let _ = events.send(done);
        }
        Err(err) => tracing::error!(job = job.id, error = %err, "could not record the end of a deploy"),
    }
}
