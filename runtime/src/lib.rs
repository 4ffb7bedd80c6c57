//! What both Shorty servers share that is not the sans-IO core
//! (`shorty-service`): the command line and config file, the data
//! directory (lock, key, recovery, hint files), listeners, signals and
//! systemd notification, the per-core driver both backends run, the admin
//! listener's metrics, the remote store's plumbing, and the offline tools.
//!
//! - [`config`]: CLI, environment, TOML file, and the checks.
//! - [`datadir`]: one instance per directory, the code key, parallel
//!   recovery, hint files, disk-full repair.
//! - [`listen`]: `SO_REUSEPORT` listeners, refusing a served address.
//! - [`slots`]: the process-wide connection limit.
//! - [`driver`]: the per-core loops, generic over the backend's I/O.
//! - [`admin`]: the metrics behind the admin listener's `/metrics`.
//! - [`remote`]: the channels between the cores and a remote store's
//!   thread.
//! - [`tools`]: `verify`, `export`, `import`.
//! - [`blocklist`]: `--blocklist`, re-read on SIGHUP.
//! - [`click_limits`]: click limits' counts, saved under the data directory.
//! - [`disable`]: `disable-destination`, links to blocked destinations
//!   disabled in bulk through the running server.
//! - [`keys`]: `keys create|list|revoke`, and reloading keys while serving.
//! - [`merge`]: the merge (compaction) thread and the `merge` tool.
//! - [`logging`]: text or JSON logs.
//! - [`notify`]: extending systemd's start timeout while recovering.
//! - [`server`]: each backend's whole `main`.
// Two `unsafe` calls (`malloc_trim` in `datadir.rs`, the `ioprio_set`
// syscall in `merge.rs`: neither libc nor rustix wraps it), commented;
// none else.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod blocklist;
pub mod click_limits;
pub mod config;
pub mod datadir;
pub mod disable;
pub mod driver;
pub mod keys;
pub mod listen;
pub mod logging;
pub mod merge;
pub mod notify;
pub mod redis_link;
pub mod redis_store;
pub mod remote;
pub mod server;
pub mod slots;
pub mod stats;
pub mod stats_redis;
pub mod tools;
