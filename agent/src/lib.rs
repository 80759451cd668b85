//! Ferry's node agent, as a library.
//!
//! Today this holds only the eBPF side ([`bpf`]): the programs built from `ferry-ebpf`, embedded
//! at compile time, and typed wrappers to load them, attach them and fill their maps. The agent's
//! node loop (watching the apiserver and programming the overlay) lands with the overlay issue;
//! until then the `ferry-agent` binary only reports what it carries.

pub mod bpf;
