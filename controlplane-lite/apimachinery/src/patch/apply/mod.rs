//! Server-side apply (minimal) and `metadata.managedFields` bookkeeping.
//!
//! [`apply`] implements `PATCH` with `application/apply-patch+yaml`:
//!
//! 1. The applied configuration must be an object with `apiVersion` and the request's `kind`, and
//!    must not carry `metadata.managedFields` (400, as upstream).
//! 2. For kinds with a status subresource (`Pod`, `Node`, `Service`, `Namespace`, `Deployment`,
//!    `ReplicaSet`, `DaemonSet`, `StatefulSet`, `Job`) `status` is dropped from the applied
//!    configuration, as upstream resets it on the main resource.
//! 3. Its field set ([`fields_of`]) becomes the manager's `Apply` entry.
//! 4. No object yet: the applied configuration is the object (`created: true`; the server then
//!    sets uid, timestamps and defaults as for a create and answers 201).
//! 5. Otherwise, **conflicts**: a leaf the configuration sets to a value different from the live
//!    one, owned by another manager (`Apply` or `Update` entry) -> [`ApplyError::Conflict`] (409)
//!    unless `force`, in which case the other managers lose those fields. As upstream, a manager
//!    is a name with an operation and subresource: only the applier's own `Apply` entry is not
//!    another manager, so `kubectl scale` (recorded as `kubectl`, `Update`, subresource `scale`)
//!    conflicts with `kubectl apply --server-side`.
//!    **Upgrade from client-side apply** (upstream's lastAppliedManager): for the manager
//!    `kubectl` ([`KUBECTL_APPLY_MANAGER`]), conflicts on fields whose live value still equals
//!    the one in the object's `kubectl.kubernetes.io/last-applied-configuration` annotation
//!    ([`client_side_applied_fields`]) are not conflicts: the apply proceeds as if forced when
//!    they are the only ones; otherwise the 409 lists only the others.
//! 6. **Removal** (implemented): fields in the manager's previous `Apply` set that the new
//!    configuration omits, and that no other manager owns (at or below that path), are removed
//!    from the object; containers left empty by the removal go too unless someone owns them.
//! 7. The configuration is strategic-merged into the object ([`strategic_merge`]), so keyed lists
//!    merge by key and other lists are replaced.
//! 8. For the manager `kubectl`, an existing non-empty last-applied annotation is set to the
//!    applied configuration ([`update_last_applied`], upstream's lastAppliedUpdater), so that
//!    client-side `kubectl apply` keeps working after `kubectl apply --server-side`.
//! 9. Every managed-fields entry is pruned of paths that no longer exist; empty entries are
//!    dropped; entries are sorted like upstream (operation, time, manager, apiVersion).
//!
//! [`track_update`] is the counterpart for ordinary writes (create, update, non-apply patches):
//! the writing manager's `Update` entry gains the fields whose values changed, and every other
//! manager loses them, which is what makes later applies conflict with `kubectl edit`/controllers.
//! Like upstream it starts from the `managedFields` the client sent, if any, which is how kubectl
//! moves the fields of `kubectl-client-side-apply` to `kubectl` after its first server-side apply.
//!
//! Not implemented: shared ownership rules for list *order*, version conversion of field sets
//! (every kind here has one version), `subresource`-specific reset rules beyond dropping
//! `status`, and the upstream limit on the number of `Update` entries.
//!
//! | File | What |
//! |---|---|
//! | `mod.rs` | [`apply`], [`track_update`], their errors and conflict messages |
//! | `managed.rs` | `metadata.managedFields` entries: decoding, encoding, pruning, sorting |
//! | `last_applied.rs` | client-side apply interop: [`client_side_applied_fields`], [`update_last_applied`] |
//! | `tests.rs` | the unit tests of the whole module |

mod last_applied;
mod managed;
#[cfg(test)]
mod tests;

pub use last_applied::{
    client_side_applied_fields, update_last_applied, KUBECTL_APPLY_MANAGER, LAST_APPLIED_ANNOTATION,
};

use serde_json::Value;

use super::fieldset::{fields_of, remove_at, value_at, DisplayPath, FieldSet, PathElement};
use super::strategic::strategic_merge;
use super::PatchError;
use managed::{
    is_element_path, read_entries, requested_entries, without_managed_fields, write_entries,
    ManagedEntry,
};

/// Kinds whose main resource ignores `status` (they have a `/status` subresource).
const STATUS_RESET_KINDS: [&str; 9] = [
    "Pod",
    "Node",
    "Service",
    "Namespace",
    "Deployment",
    "ReplicaSet",
    "DaemonSet",
    "StatefulSet",
    "Job",
];

/// Result of a successful [`apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyOutcome {
    /// The new object, with `metadata.managedFields` updated.
    pub object: Value,
    /// True when there was no object before (answer 201 instead of 200).
    pub created: bool,
}

/// One field another manager owns and the applied configuration would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictCause {
    /// The other manager's name.
    pub manager: String,
    /// Its entry's operation, `Apply` or `Update`.
    pub operation: String,
    /// Its entry's `apiVersion`.
    pub api_version: String,
    /// Its entry's subresource (`scale`, `status`), empty for the main resource.
    pub subresource: String,
    /// The field, in upstream's notation (`.spec.replicas`,
    /// `.spec.containers[name="nginx"].image`).
    pub field: String,
}

impl ConflictCause {
    /// The manager as upstream prints it: `"kubectl"` for an applier, `"kube-controller-manager"
    /// using apps/v1` for an updater, `"kubectl" with subresource "scale" using apps/v1` for an
    /// updater of a subresource.
    pub fn manager_description(&self) -> String {
        let mut text = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            text = format!("{text} with subresource {:?}", self.subresource);
        }
        if self.operation == "Update" {
            text = format!("{text} using {}", self.api_version);
        }
        text
    }
}

/// Why an apply was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change (409, `details.causes[].reason:
    /// FieldManagerConflict`). Retry with `force=true` to take them over, or drop the fields
    /// from the configuration.
    #[error("{}", conflict_message(.causes))]
    Conflict {
        /// Every conflicting (manager, field) pair.
        causes: Vec<ConflictCause>,
    },
    /// The request is malformed (400): not an object, no `apiVersion`, wrong `kind`, no field
    /// manager, `metadata.managedFields` set.
    #[error("{0}")]
    BadRequest(String),
    /// The configuration could not be merged (see [`PatchError::http_status`]).
    #[error(transparent)]
    Patch(#[from] PatchError),
}

impl ApplyError {
    /// HTTP status for the Status response.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Conflict { .. } => 409,
            Self::BadRequest(_) => 400,
            Self::Patch(e) => e.http_status(),
        }
    }
}

/// Upstream's conflict message: `Apply failed with 1 conflict: conflict with "m": .spec.replicas`
/// or, for several, `Apply failed with N conflicts: conflicts with "m":\n- .a\n- .b`.
pub fn conflict_message(causes: &[ConflictCause]) -> String {
    match causes {
        [one] => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.manager_description(),
            one.field
        ),
        _ => {
            let mut managers: Vec<String> = causes
                .iter()
                .map(ConflictCause::manager_description)
                .collect();
            managers.sort();
            managers.dedup();
            let mut lines = Vec::new();
            for manager in &managers {
                lines.push(format!("conflicts with {manager}:"));
                for cause in causes
                    .iter()
                    .filter(|c| &c.manager_description() == manager)
                {
                    lines.push(format!("- {}", cause.field));
                }
            }
            format!(
                "Apply failed with {} conflicts: {}",
                causes.len(),
                lines.join("\n")
            )
        }
    }
}

/// Server-side apply of `applied` (the decoded request body) by `manager` onto `existing` (the
/// live object, `None` when absent). `now` is the RFC 3339 time recorded in the entry.
pub fn apply(
    kind: &str,
    existing: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<ApplyOutcome, ApplyError> {
    let raw_config = applied;
    let applied = validated_config(kind, applied, manager)?;
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let applied_set = fields_of(kind, &applied);
    let new_entry = ManagedEntry {
        manager: manager.to_owned(),
        operation: "Apply".to_owned(),
        api_version,
        time: now.to_owned(),
        subresource: String::new(),
        fields: applied_set.clone(),
    };

    let Some(existing) = existing else {
        let mut object = applied;
        if manager == KUBECTL_APPLY_MANAGER {
            update_last_applied(&mut object, raw_config);
        }
        write_entries(&mut object, vec![new_entry]);
        return Ok(ApplyOutcome {
            object,
            created: true,
        });
    };

    let mut entries = read_entries(Some(existing));
    // This applier's own entry. Entries are managers as upstream identifies them, by name,
    // operation and subresource (and apiVersion for updaters): `kubectl scale` without a field
    // manager records `kubectl`/Update/scale, which `kubectl apply --server-side` conflicts with.
    let is_mine = |e: &ManagedEntry| {
        e.manager == manager && e.operation == "Apply" && e.subresource.is_empty()
    };

    // Conflicts: leaves we would change that somebody else owns.
    let mut conflicts: Vec<(usize, Vec<PathElement>)> = Vec::new();
    for path in applied_set.paths() {
        if is_element_path(&path) {
            continue;
        }
        let Some(live) = value_at(existing, &path) else {
            continue;
        };
        if value_at(&applied, &path) == Some(live) {
            continue;
        }
        for (i, entry) in entries.iter().enumerate() {
            if !is_mine(entry) && entry.fields.contains(&path) {
                conflicts.push((i, path.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        // Upgrade from client-side apply: `kubectl apply --server-side` may take over what
        // `kubectl apply` set, as long as the live value is still the last-applied one.
        let upgradable = if manager == KUBECTL_APPLY_MANAGER {
            client_side_applied_fields(kind, &new_entry.api_version, existing)
        } else {
            None
        };
        let causes: Vec<ConflictCause> = conflicts
            .iter()
            .filter(|(_, path)| !upgradable.as_ref().is_some_and(|set| set.contains(path)))
            .map(|(i, path)| ConflictCause {
                manager: entries[*i].manager.clone(),
                operation: entries[*i].operation.clone(),
                api_version: entries[*i].api_version.clone(),
                subresource: entries[*i].subresource.clone(),
                field: DisplayPath(path).to_string(),
            })
            .collect();
        if !causes.is_empty() {
            return Err(ApplyError::Conflict { causes });
        }
    }
    for (i, path) in &conflicts {
        entries[*i].fields.remove(path);
    }

    // Removal of fields this manager applied before and no longer applies.
    let mut object = without_managed_fields(existing);
    let previous = entries.iter().position(is_mine);
    if let Some(previous) = previous {
        let mut dropped: Vec<Vec<PathElement>> = entries[previous]
            .fields
            .paths()
            .into_iter()
            .filter(|p| !applied_set.contains_at_or_below(p))
            .filter(|p| {
                !entries
                    .iter()
                    .enumerate()
                    .any(|(i, e)| i != previous && e.fields.contains_at_or_below(p))
            })
            .collect();
        // Shallowest first: removing a list element takes its fields with it (removing the
        // fields first would strip the merge key the element is found by).
        dropped.sort_by_key(Vec::len);
        for path in &dropped {
            if remove_at(&mut object, path) {
                prune_empty_parents(&mut object, path, &entries, &applied_set);
            }
        }
        entries.remove(previous);
    }

    let mut object = strategic_merge(kind, &object, &applied)?;
    if manager == KUBECTL_APPLY_MANAGER {
        update_last_applied(&mut object, raw_config);
    }
    entries.push(new_entry);
    write_entries(&mut object, entries);
    Ok(ApplyOutcome {
        object,
        created: false,
    })
}

/// After removing `path`, removes parents that became empty objects/lists and that nobody owns.
fn prune_empty_parents(
    object: &mut Value,
    path: &[PathElement],
    entries: &[ManagedEntry],
    applied: &FieldSet,
) {
    let mut parent = &path[..path.len().saturating_sub(1)];
    while !parent.is_empty() && parent != [PathElement::Field("metadata".to_owned())] {
        let empty = match value_at(object, parent) {
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        let owned = applied.contains(parent) || entries.iter().any(|e| e.fields.contains(parent));
        if !empty || owned {
            return;
        }
        remove_at(object, parent);
        parent = &parent[..parent.len() - 1];
    }
}

fn validated_config(kind: &str, applied: &Value, manager: &str) -> Result<Value, ApplyError> {
    if manager.is_empty() {
        return Err(ApplyError::BadRequest(
            "PATCH, application/apply-patch+yaml requests require the fieldManager query parameter"
                .to_owned(),
        ));
    }
    let Value::Object(map) = applied else {
        return Err(ApplyError::BadRequest(
            "the applied configuration must be an object".to_owned(),
        ));
    };
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api_version.is_empty() {
        return Err(ApplyError::BadRequest(
            "apiVersion must be set in the applied configuration".to_owned(),
        ));
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k == kind => {}
        Some(k) => {
            return Err(ApplyError::BadRequest(format!(
                "the applied configuration is a {k}, not a {kind}"
            )))
        }
        None => {
            return Err(ApplyError::BadRequest(
                "kind must be set in the applied configuration".to_owned(),
            ))
        }
    }
    let managed = applied.pointer("/metadata/managedFields");
    if managed.is_some_and(|m| !m.is_null() && m.as_array().is_none_or(|a| !a.is_empty())) {
        return Err(ApplyError::BadRequest(
            "metadata.managedFields must be nil".to_owned(),
        ));
    }
    let mut applied = without_managed_fields(applied);
    if STATUS_RESET_KINDS.contains(&kind) {
        if let Some(map) = applied.as_object_mut() {
            map.remove("status");
        }
    }
    Ok(applied)
}

/// Managed-fields bookkeeping for an ordinary write (create, update, non-apply patch) of
/// `new` (the object about to be stored) over `old` (`None` on create) by `manager`
/// (`fieldManager` query parameter, or a name derived from the user agent as upstream does,
/// e.g. `kubectl-edit`). `subresource` is `Some("status")` for `/status` writes.
///
/// Fields whose value changed go to `manager`'s `Update` entry and are taken away from every
/// other entry. The entries start from the client's, as upstream, so that `managedFields` can be
/// written directly (kubectl does so to migrate `kubectl-client-side-apply` to `kubectl` after
/// `kubectl apply --server-side`):
///
/// - on create, the new object's entries;
/// - on update of the main resource, the new object's entries when it has any (`[]` or `[{}]`
///   resets them to none), else the old object's, so that clients which drop `managedFields` do
///   not erase them; a list with an entry that cannot be decoded (no `fieldsV1`) also falls back
///   to the old object's;
/// - on a subresource write, always the old object's.
///
/// Returns `new` with `managedFields` set.
pub fn track_update(
    kind: &str,
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    subresource: Option<&str>,
    now: &str,
) -> Value {
    let mut object = without_managed_fields(new);
    let mut entries = match old {
        None => read_entries(Some(new)),
        Some(old) if subresource.is_some() => read_entries(Some(old)),
        Some(old) => requested_entries(new).unwrap_or_else(|| read_entries(Some(old))),
    };
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let subresource = subresource.unwrap_or_default().to_owned();

    let mut changed = FieldSet::new();
    for path in fields_of(kind, &object).paths() {
        let before = old.and_then(|o| value_at(o, &path));
        let unchanged = if is_element_path(&path) {
            before.is_some()
        } else {
            before == value_at(&object, &path)
        };
        if !unchanged {
            changed.insert(&path);
        }
    }

    if !changed.is_empty() {
        let changed_paths = changed.paths();
        for entry in &mut entries {
            for path in &changed_paths {
                entry.fields.remove(path);
            }
        }
        let mine = entries.iter_mut().find(|e| {
            e.manager == manager
                && e.operation == "Update"
                && e.api_version == api_version
                && e.subresource == subresource
        });
        match mine {
            Some(entry) => {
                for path in &changed_paths {
                    entry.fields.insert(path);
                }
                entry.time = now.to_owned();
            }
            None => entries.push(ManagedEntry {
                manager: manager.to_owned(),
                operation: "Update".to_owned(),
                api_version,
                time: now.to_owned(),
                subresource,
                fields: changed,
            }),
        }
    }
    write_entries(&mut object, entries);
    object
}
