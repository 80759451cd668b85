//! Services on this node: the agent's kube-proxy replacement.
//!
//! ```text
//! Services, EndpointSlices (watch -> records: what the table reads), Nodes (watch)
//!     --> table::compute (pure) --> ServiceTable
//!     --> Proxier::sync: eBPF socket LB (default) | iptables (kube-proxy style rules)
//! ```
//!
//! A [`Proxier`] programs a whole [`ServiceTable`] and is level-triggered: it reads back what the
//! kernel holds (pinned maps, our iptables chains) and changes only what differs, so a restarted
//! agent adopts the datapath instead of flushing it.

pub mod ebpf;
pub mod healthcheck;
pub mod iptables;
pub mod l2;
pub mod maglev;
pub mod nodeport;
pub mod reconcile;
pub(crate) mod records;
pub mod table;

/// The flag's enum lives with the other flags; re-exported here for the proxiers.
pub use crate::config::ProxyMode;
pub use table::{
    compute, Backend, Entry, Frontend, FrontendKind, HealthCheck, Options, Proto, ServicePortName,
    ServiceRecord, ServiceTable, SliceRecord,
};

/// What one [`Proxier::sync`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Frontends added or changed.
    pub changed: usize,
    /// Frontends removed.
    pub removed: usize,
    /// Frontends that could not be programmed (logged; retried next round; the others work).
    pub failed: usize,
}

/// One way of implementing Services in the kernel.
pub trait Proxier: std::fmt::Debug + Send {
    /// The mode this proxier implements.
    fn mode(&self) -> ProxyMode;
    /// Makes the kernel translate exactly `table`: adds, changes and removes frontends (each
    /// frontend atomically: a new connection sees the old or the new backends, never a mix),
    /// leaves untouched what already matches. A frontend that fails is counted, the rest served.
    fn sync(&mut self, table: &ServiceTable) -> Result<SyncStats, ProxyError>;
    /// The datapath's own counters and map fill, for the metrics (`None`: it has none; the
    /// iptables proxier leaves counting to `iptables-save -c`). Called after each sync; cheap.
    fn datapath(&self) -> Option<DatapathStats> {
        None
    }
}

/// How full one datapath map is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapFill {
    /// The map's name (its pin name).
    pub map: &'static str,
    /// Entries the proxier wrote (`None` where counting is not cheap: the LRU maps the programs
    /// write themselves).
    pub entries: Option<u64>,
    /// The map's `max_entries`.
    pub capacity: u64,
}

/// A datapath's counters (summed over CPUs) and map fill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatapathStats {
    /// `(counter name, value)`, e.g. `("connect4_rewrites", 12)`; names starting with `err_`
    /// are errors.
    pub counters: Vec<(&'static str, u64)>,
    /// One per map.
    pub maps: Vec<MapFill>,
}

/// A proxier could not work at all this round (the previous datapath stays in place).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The eBPF programs or maps could not be loaded, pinned or attached.
    #[error("eBPF datapath: {0}")]
    Bpf(String),
    /// iptables-save / iptables-restore failed.
    #[error("iptables: {0}")]
    Iptables(String),
}
