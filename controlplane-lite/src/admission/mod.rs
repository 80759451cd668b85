//! Kind-specific behaviour on writes: defaulting, immutable fields, generation, status and scale
//! subresources, graceful deletion and finalizers, and the ClusterIP / NodePort allocators.
//!
//! | File | What |
//! |---|---|
//! | `defaults.rs` | defaults on create and on update (pod specs, Services, workloads, generation) |
//! | `immutable.rs` | what a PUT keeps from the stored object; immutable fields |
//! | `deletion.rs` | finalizers, `propagationPolicy`, graceful (pod) deletion |
//! | `alloc.rs` | the ClusterIP / NodePort [`Allocator`] (the only part doing I/O) |
//! | `subresource.rs` | the Scale view, status conditions |
//! | `secrets.rs` | Secret `stringData` and `type`, `immutable` Secrets and ConfigMaps |
//! | `node.rs` | NodeRestriction (what a node may write to its Node), immutable podCIDRs, `ferry.dev/mtu` |

mod alloc;
mod defaults;
mod deletion;
mod immutable;
mod node;
mod secrets;
mod subresource;

pub use alloc::{allocate, allocation_keys, release, release_for, released_by_update, Allocator};
pub use defaults::{defaults_on_create, on_update};
pub use deletion::{
    add_finalizer, finalizers, graceful, propagation_policy, waits_for_finalizers_only, Propagation,
};
pub use immutable::{check_immutable, merge_update};
pub use node::{
    label_forbidden, node_restriction, pod_cidrs_immutable, validate_node, MTU_ANNOTATION, MTU_MAX,
    MTU_MIN, NODE_ANNOTATIONS,
};
pub use secrets::{immutable_data, normalize_secret};
pub use subresource::{scale_of, set_condition};
