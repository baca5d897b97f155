//! The agent's checkpoint task: every `checkpoint_interval` (and at start
//! and shutdown) it makes the trail durable, signs a checkpoint of its last
//! record with the node's key, keeps a copy in the trail's tree and hands
//! it to every sink, so that the checkpoint leaves the node
//! (`docs/trail.md`, "Checkpoints").

use std::{path::PathBuf, sync::Arc, time::Duration};

use super::AgentConfig;
use crate::sinks::Sinks;
use crate::trail::{
    Trail, TrailError,
    checkpoint::CheckpointSigner,
    checkpoint_key::{self, KeyFileError},
};

/// Errors starting the checkpoint task.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointTaskError {
    /// The signing key could not be loaded or created.
    #[error("loading the checkpoint signing key")]
    LoadKey(#[source] KeyFileError),
    /// `checkpoint_interval` is zero.
    #[error("checkpoint_interval must be more than zero")]
    CheckInterval,
    /// The trail's origin or key could not be recorded.
    #[error("recording the trail's origin and checkpoint key")]
    RecordOrigin(#[source] TrailError),
}

/// What the task needs.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    trail: Trail,
    signer: Arc<CheckpointSigner>,
    node: String,
    interval: Duration,
}

impl Checkpointer {
    /// Loads the key (`checkpoint_key`, else the data dir's, made on first
    /// start), makes the trail's origin if it has none, and records the key.
    ///
    /// # Errors
    /// [`CheckpointTaskError`].
    pub fn new(
        config: &AgentConfig,
        node: &str,
        trail: &Trail,
    ) -> Result<Self, CheckpointTaskError> {
        if config.trail.checkpoint_interval.is_zero() {
            return Err(CheckpointTaskError::CheckInterval);
        }
        let (signer, source): (CheckpointSigner, PathBuf) = match &config.trail.checkpoint_key {
            Some(path) => (
                checkpoint_key::load(path).map_err(CheckpointTaskError::LoadKey)?,
                path.clone(),
            ),
            None => {
                let (signer, created) = checkpoint_key::load_or_create(&config.data_dir, node)
                    .map_err(CheckpointTaskError::LoadKey)?;
                let path = checkpoint_key::key_path(&config.data_dir);
                if created {
                    tracing::info!(path = %path.display(), "created the checkpoint signing key");
                }
                (signer, path)
            }
        };
        let origin = trail
            .ensure_origin()
            .map_err(CheckpointTaskError::RecordOrigin)?;
        let key = signer.verifier().to_string();
        trail
            .add_checkpoint_key(&key)
            .map_err(CheckpointTaskError::RecordOrigin)?;
        tracing::info!(%origin, key = %key, fingerprint = %signer.verifier().fingerprint(), file = %source.display(), "signing trail checkpoints");
        Ok(Self {
            trail: trail.clone(),
            signer: Arc::new(signer),
            node: node.to_owned(),
            interval: config.trail.checkpoint_interval,
        })
    }

    /// Makes one checkpoint and sends it to the sinks (blocking work runs
    /// off the event loop).
    pub async fn emit(&self, sinks: &Sinks) {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.trail.checkpoint(&me.signer, &me.node)).await {
            Ok(Ok(signed)) => {
                tracing::debug!(seq = signed.checkpoint.seq, "checkpoint");
                sinks.send_checkpoint(signed.to_line());
            }
            Ok(Err(err)) => {
                tracing::error!(error = %crate::error::error_chain(&err), "trail checkpoint failed");
            }
            Err(err) => tracing::error!(error = %err, "trail checkpoint task failed"),
        }
    }

    /// Emits a checkpoint now and then every interval, until aborted.
    pub async fn run(self, sinks: Arc<Sinks>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.emit(&sinks).await;
        }
    }
}
