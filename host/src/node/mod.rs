//! Host facts: which token files exist on this node and whose they are,
//! and which pod and container a process belongs to.
//!
//! - `kubelet`: discovery of the token files under the kubelet root
//!   (projected and legacy Secret volumes, atomic-writer layout), each with
//!   its pod UID, volume, (dev, ino) and identity.
//! - `watch`: [`TokenWatcher`], inotify on those volumes; reports
//!   [`WatchChange::Add`]/[`WatchChange::Remove`] on a channel for the
//!   sensor's watched-inode map.
//! - `cgroup`: [`CgroupResolver`], cgroup id -> [`Attribution`] (host, or
//!   pod UID + container ID + runtime + QoS), for both cgroup drivers.
//!
//! Pod names and namespaces come from the pods' own bound tokens
//! ([`PodMeta`]), so none of this needs API access.

use std::path::PathBuf;

mod cgroup;
mod kubelet;
mod watch;

pub use cgroup::{
    Attribution, CgroupResolver, QosClass, Runtime, find_cgroup2_mount, parse_cgroup_path,
    parse_mountinfo_cgroup2,
};
pub use kubelet::{
    DEFAULT_KUBELET_ROOT, PodMeta, TokenFile, VolumeKind, discover, pods_from_tokens,
};
pub use watch::{TokenWatcher, WatchChange, WatchHandle, WatchedFile};

pub use tokenwatch_core::identity::FileId;

/// Everything that can go wrong while looking at the host.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing a kubelet directory failed.
    #[error("cannot read directory {}", path.display())]
    ReadKubeletDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Setting up inotify failed.
    #[error("cannot set up inotify")]
    InitInotify {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Adding an inotify watch failed.
    #[error("cannot watch {}", path.display())]
    AddWatch {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading `/proc/self/mountinfo` failed.
    #[error("cannot read {}", path.display())]
    ReadMountinfo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No cgroup2 file system is mounted.
    #[error("no cgroup v2 hierarchy is mounted (looked in {})", path.display())]
    FindCgroup2 {
        /// The mountinfo file searched.
        path: PathBuf,
    },
    /// Walking the cgroup hierarchy failed at its root.
    #[error("cannot read the cgroup hierarchy at {}", path.display())]
    ReadCgroupDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
