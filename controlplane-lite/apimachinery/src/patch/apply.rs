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

use std::fmt;

use serde_json::{Map, Value};

use super::fieldset::{fields_of, remove_at, value_at, DisplayPath, FieldSet, PathElement};
use super::strategic::strategic_merge;
use super::PatchError;

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

/// One `metadata.managedFields` entry, decoded.
#[derive(Debug, Clone, PartialEq)]
struct ManagedEntry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    fields: FieldSet,
}

impl ManagedEntry {
    fn decode(value: &Value) -> Option<Self> {
        let text = |k: &str| {
            value
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Some(Self {
            manager: text("manager"),
            operation: text("operation"),
            api_version: text("apiVersion"),
            time: text("time"),
            subresource: text("subresource"),
            fields: FieldSet::from_fields_v1(value.get("fieldsV1")?),
        })
    }

    fn encode(&self) -> Value {
        let mut map = Map::new();
        map.insert("manager".to_owned(), Value::from(self.manager.clone()));
        map.insert("operation".to_owned(), Value::from(self.operation.clone()));
        map.insert(
            "apiVersion".to_owned(),
            Value::from(self.api_version.clone()),
        );
        if !self.time.is_empty() {
            map.insert("time".to_owned(), Value::from(self.time.clone()));
        }
        map.insert("fieldsType".to_owned(), Value::from("FieldsV1"));
        map.insert("fieldsV1".to_owned(), self.fields.to_fields_v1());
        if !self.subresource.is_empty() {
            map.insert(
                "subresource".to_owned(),
                Value::from(self.subresource.clone()),
            );
        }
        Value::Object(map)
    }
}

impl fmt::Display for ManagedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.manager, self.operation)
    }
}

fn read_entries(obj: Option<&Value>) -> Vec<ManagedEntry> {
    obj.and_then(|o| o.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(ManagedEntry::decode).collect())
        .unwrap_or_default()
}

/// Prunes paths missing from `obj`, drops empty entries, sorts like upstream and stores the
/// result in `obj.metadata.managedFields` (removing the key when nothing is managed).
fn write_entries(obj: &mut Value, mut entries: Vec<ManagedEntry>) {
    for entry in &mut entries {
        for path in entry.fields.paths() {
            if value_at(obj, &path).is_none() {
                entry.fields.remove(&path);
            }
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|p, q| {
        p.operation
            .cmp(&q.operation)
            .then_with(|| p.time.cmp(&q.time))
            .then_with(|| p.manager.cmp(&q.manager))
            .then_with(|| p.api_version.cmp(&q.api_version))
            .then_with(|| p.subresource.cmp(&q.subresource))
    });
    let Some(obj) = obj.as_object_mut() else {
        return;
    };
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".to_owned(),
            Value::Array(entries.iter().map(ManagedEntry::encode).collect()),
        );
    }
}

/// The `metadata.managedFields` a client sent, as upstream's `decodeLiveOrNew` takes them: `None`
/// when absent, `null`, not a list or not decodable (keep the live ones), no entries for a reset
/// (`[]`, or one empty entry `[{}]`).
fn requested_entries(obj: &Value) -> Option<Vec<ManagedEntry>> {
    let list = obj.pointer("/metadata/managedFields")?.as_array()?;
    let is_reset = match list.as_slice() {
        [] => true,
        [only] => only
            .as_object()
            .is_some_and(|m| m.values().all(|v| v.is_null() || v.as_str() == Some(""))),
        _ => false,
    };
    if is_reset {
        return Some(Vec::new());
    }
    list.iter().map(ManagedEntry::decode).collect()
}

fn without_managed_fields(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    obj
}

/// True for paths whose last element is a list element (`k:`/`v:`/`i:`): their existence is
/// owned, but they carry no value of their own to conflict on.
fn is_element_path(path: &[PathElement]) -> bool {
    matches!(
        path.last(),
        Some(PathElement::Key(_) | PathElement::Value(_))
    )
}

/// kubectl's client-side apply annotation: the configuration `kubectl apply` applied last, as
/// JSON.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The field manager of `kubectl apply --server-side`. Only this manager upgrades from
/// client-side apply and keeps [`LAST_APPLIED_ANNOTATION`] up to date, as upstream: applying with
/// another `--field-manager` opts out of both.
pub const KUBECTL_APPLY_MANAGER: &str = "kubectl";

/// Upstream's limit on the total size of an object's annotations (keys plus values, in bytes).
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// The fields client-side `kubectl apply` still stands behind in `live`, read from its
/// [`LAST_APPLIED_ANNOTATION`]: every path of the last-applied configuration whose live value is
/// still the last-applied one (for list elements: that still exist). A field changed since, by
/// `kubectl scale`, `kubectl edit` or a controller, is not in the set, and neither is one the
/// configuration does not mention.
///
/// `None` when there is no usable annotation: absent, empty, not a JSON object, or of another
/// `apiVersion` (`api_version`, the applied configuration's) or kind than the object, as upstream.
///
/// A server-side apply by [`KUBECTL_APPLY_MANAGER`] whose conflicts all lie in this set takes
/// those fields over as if forced (upstream's lastAppliedManager); this is what lets
/// `kubectl apply --server-side` follow `kubectl apply` without `--force-conflicts`.
pub fn client_side_applied_fields(kind: &str, api_version: &str, live: &Value) -> Option<FieldSet> {
    let annotation = live
        .pointer("/metadata/annotations")?
        .get(LAST_APPLIED_ANNOTATION)?
        .as_str()?;
    let config: Value = serde_json::from_str(annotation).ok()?;
    if config.get("apiVersion").and_then(Value::as_str) != Some(api_version)
        || config.get("kind").and_then(Value::as_str) != Some(kind)
    {
        return None;
    }
    let mut set = FieldSet::new();
    for path in fields_of(kind, &config).paths() {
        let still_applied = if is_element_path(&path) {
            value_at(live, &path).is_some()
        } else {
            value_at(live, &path).is_some_and(|v| value_at(&config, &path) == Some(v))
        };
        if still_applied {
            set.insert(&path);
        }
    }
    Some(set)
}

/// Upstream's lastAppliedUpdater, run after a successful server-side apply by
/// [`KUBECTL_APPLY_MANAGER`]: when `object` carries a non-empty [`LAST_APPLIED_ANNOTATION`], it
/// becomes the applied configuration `config` (the request body, without that annotation), so
/// that a later client-side `kubectl apply` (the documented downgrade) computes its three-way
/// patch against what was applied last, and a later upgrade sees the current values. An object
/// without the annotation does not get one. If the annotations would exceed upstream's 256 KiB
/// limit, the annotation is dropped instead.
///
/// The value is encoded like Go's JSON encoder, which is how kubectl writes it: keys sorted,
/// `<`, `>`, `&`, U+2028 and U+2029 escaped, a trailing newline.
pub fn update_last_applied(object: &mut Value, config: &Value) {
    let Some(annotations) = object
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if annotations
        .get(LAST_APPLIED_ANNOTATION)
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return;
    }
    let mut config = config.clone();
    if let Some(own) = config
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        own.remove(LAST_APPLIED_ANNOTATION);
    }
    annotations.insert(
        LAST_APPLIED_ANNOTATION.to_owned(),
        Value::from(go_json(&config)),
    );
    let size: usize = annotations
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    if size > TOTAL_ANNOTATION_SIZE_LIMIT {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// `value` as Go's `json.Encoder` writes it: keys sorted (also when serde_json keeps insertion
/// order), control characters escaped as serde_json does, and in addition the HTML-sensitive
/// characters and the two JavaScript line terminators escaped, then a newline. Those characters
/// only occur inside strings, so replacing them in the output is safe.
fn go_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                members.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    members
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            Value::Array(list) => Value::Array(list.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let mut out = String::new();
    for c in sorted(value).to_string().chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('\n');
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: &str = "2025-01-01T00:00:00Z";
    const T1: &str = "2025-01-01T00:01:00Z";

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": image}]}}
            }
        })
    }

    fn managers(obj: &Value) -> Vec<(String, String)> {
        obj["metadata"]["managedFields"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|e| {
                        (
                            e["manager"].as_str().unwrap_or_default().to_owned(),
                            e["operation"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn create_records_apply_entry() {
        let out = apply(
            "Deployment",
            None,
            &deployment(2, "nginx:1"),
            "kubectl",
            false,
            T0,
        )
        .expect("apply");
        assert!(out.created);
        let entry = &out.object["metadata"]["managedFields"][0];
        assert_eq!(entry["manager"], "kubectl");
        assert_eq!(entry["operation"], "Apply");
        assert_eq!(entry["apiVersion"], "apps/v1");
        assert_eq!(entry["time"], T0);
        assert_eq!(entry["fieldsType"], "FieldsV1");
        assert_eq!(entry["fieldsV1"]["f:spec"]["f:replicas"], json!({}));
        assert_eq!(
            entry["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
                ["k:{\"name\":\"nginx\"}"]["."],
            json!({})
        );
        assert_eq!(out.object["spec"]["replicas"], 2);
    }

    #[test]
    fn reapply_same_manager_updates_without_conflict() {
        let first = apply(
            "Deployment",
            None,
            &deployment(2, "nginx:1"),
            "kubectl",
            false,
            T0,
        )
        .expect("create");
        let second = apply(
            "Deployment",
            Some(&first.object),
            &deployment(3, "nginx:2"),
            "kubectl",
            false,
            T1,
        )
        .expect("update");
        assert!(!second.created);
        assert_eq!(second.object["spec"]["replicas"], 3);
        assert_eq!(
            second.object["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:2"
        );
        assert_eq!(
            managers(&second.object),
            vec![("kubectl".into(), "Apply".into())]
        );
        assert_eq!(second.object["metadata"]["managedFields"][0]["time"], T1);
    }

    #[test]
    fn conflict_with_other_applier_and_force() {
        let first = apply(
            "Deployment",
            None,
            &deployment(2, "nginx:1"),
            "alice",
            false,
            T0,
        )
        .expect("create");
        let bob = json!({"apiVersion":"apps/v1","kind":"Deployment",
            "metadata":{"name":"web"},"spec":{"replicas":5}});
        let err =
            apply("Deployment", Some(&first.object), &bob, "bob", false, T1).expect_err("conflict");
        assert_eq!(err.http_status(), 409);
        match &err {
            ApplyError::Conflict { causes } => {
                assert_eq!(causes.len(), 1);
                assert_eq!(causes[0].manager, "alice");
                assert_eq!(causes[0].field, ".spec.replicas");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas"
        );

        // Same value: shared ownership, no conflict.
        let same = json!({"apiVersion":"apps/v1","kind":"Deployment",
            "metadata":{"name":"web"},"spec":{"replicas":2}});
        let shared =
            apply("Deployment", Some(&first.object), &same, "bob", false, T1).expect("shared");
        assert_eq!(managers(&shared.object).len(), 2);

        // Forced: bob takes .spec.replicas, alice keeps the rest.
        let forced =
            apply("Deployment", Some(&first.object), &bob, "bob", true, T1).expect("force");
        assert_eq!(forced.object["spec"]["replicas"], 5);
        let fields = &forced.object["metadata"]["managedFields"];
        let alice = fields
            .as_array()
            .and_then(|l| l.iter().find(|e| e["manager"] == "alice"))
            .expect("alice entry");
        assert!(alice["fieldsV1"]["f:spec"].get("f:replicas").is_none());
        assert!(alice["fieldsV1"]["f:spec"].get("f:template").is_some());
    }

    #[test]
    fn conflict_with_updater_names_api_version() {
        let created = track_update(
            "Deployment",
            None,
            &deployment(1, "nginx:1"),
            "kubectl-create",
            None,
            T0,
        );
        let applied = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
            "spec":{"replicas":4,"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:9"}]}}}});
        let err = apply("Deployment", Some(&created), &applied, "kubectl", false, T1)
            .expect_err("conflict");
        let ApplyError::Conflict { causes } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(causes.len(), 2);
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"kubectl-create\" using apps/v1:\n\
             - .spec.replicas\n\
             - .spec.template.spec.containers[name=\"nginx\"].image"
        );
    }

    #[test]
    fn omitted_fields_are_removed_unless_owned_elsewhere() {
        let mut config = deployment(2, "nginx:1");
        config["metadata"]["labels"]["tier"] = json!("fe");
        config["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(json!({"name": "sidecar", "image": "envoy"}));
        let first = apply("Deployment", None, &config, "kubectl", false, T0).expect("create");

        // Another manager also applies the tier label (same value, shared).
        let other = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web",
            "labels":{"tier":"fe"}}});
        let shared = apply(
            "Deployment",
            Some(&first.object),
            &other,
            "labeler",
            false,
            T0,
        )
        .expect("shared");

        // kubectl drops the sidecar and the tier label.
        let second = apply(
            "Deployment",
            Some(&shared.object),
            &deployment(2, "nginx:1"),
            "kubectl",
            false,
            T1,
        )
        .expect("reapply");
        assert_eq!(
            second.object["spec"]["template"]["spec"]["containers"],
            json!([{"name": "nginx", "image": "nginx:1"}])
        );
        // Still owned by "labeler", so it stays.
        assert_eq!(second.object["metadata"]["labels"]["tier"], "fe");

        // Without the other owner it would go.
        let third = apply(
            "Deployment",
            Some(&first.object),
            &deployment(2, "nginx:1"),
            "kubectl",
            false,
            T1,
        )
        .expect("reapply");
        assert!(third.object["metadata"]["labels"].get("tier").is_none());
        assert_eq!(third.object["metadata"]["labels"]["app"], "web");
    }

    #[test]
    fn removal_prunes_emptied_containers() {
        let config = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},
            "data":{"a":"1"}});
        let first = apply("ConfigMap", None, &config, "m", false, T0).expect("create");
        let second = apply(
            "ConfigMap",
            Some(&first.object),
            &json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}),
            "m",
            false,
            T1,
        )
        .expect("reapply");
        assert!(second.object.get("data").is_none());
        assert!(second.object["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn fields_set_by_others_are_not_removed() {
        let first = apply(
            "Deployment",
            None,
            &deployment(2, "nginx:1"),
            "kubectl",
            false,
            T0,
        )
        .expect("create");
        // A controller adds an annotation with an ordinary update.
        let mut edited = first.object.clone();
        edited["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "1"});
        let edited = track_update(
            "Deployment",
            Some(&first.object),
            &edited,
            "kube-controller-manager",
            None,
            T0,
        );
        let again = apply(
            "Deployment",
            Some(&edited),
            &deployment(2, "nginx:1"),
            "kubectl",
            false,
            T1,
        )
        .expect("reapply");
        assert_eq!(
            again.object["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "1"
        );
        assert_eq!(
            managers(&again.object),
            vec![
                ("kubectl".into(), "Apply".into()),
                ("kube-controller-manager".into(), "Update".into())
            ]
        );
    }

    #[test]
    fn status_is_dropped_for_status_subresource_kinds() {
        let mut config = deployment(1, "nginx:1");
        config["status"] = json!({"replicas": 9});
        let out = apply("Deployment", None, &config, "kubectl", false, T0).expect("apply");
        assert!(out.object.get("status").is_none());
        let cm = json!({"apiVersion":"v1","kind":"Lease","metadata":{"name":"l"},"status":{"x":1}});
        let out = apply("Lease", None, &cm, "kubectl", false, T0).expect("apply");
        assert_eq!(out.object["status"]["x"], 1);
    }

    #[test]
    fn bad_requests() {
        let cfg = deployment(1, "x");
        let err = apply("Deployment", None, &cfg, "", false, T0).expect_err("no manager");
        assert_eq!(err.http_status(), 400);
        let err = apply("Pod", None, &cfg, "m", false, T0).expect_err("wrong kind");
        assert!(matches!(err, ApplyError::BadRequest(_)));
        let err = apply("Deployment", None, &json!([]), "m", false, T0).expect_err("array");
        assert_eq!(err.http_status(), 400);
        let mut with_mf = cfg.clone();
        with_mf["metadata"]["managedFields"] = json!([{"manager": "x"}]);
        let err = apply("Deployment", None, &with_mf, "m", false, T0).expect_err("managedFields");
        assert_eq!(err.to_string(), "metadata.managedFields must be nil");
        let mut no_version = cfg;
        no_version.as_object_mut().map(|m| m.remove("apiVersion"));
        assert!(apply("Deployment", None, &no_version, "m", false, T0).is_err());
    }

    #[test]
    fn track_update_moves_ownership() {
        let created = track_update(
            "Deployment",
            None,
            &deployment(1, "nginx:1"),
            "kubectl-create",
            None,
            T0,
        );
        assert_eq!(
            managers(&created),
            vec![("kubectl-create".into(), "Update".into())]
        );
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(3);
        let scaled = track_update(
            "Deployment",
            Some(&created),
            &scaled,
            "kubectl-scale",
            None,
            T1,
        );
        let entries = scaled["metadata"]["managedFields"]
            .as_array()
            .expect("entries");
        assert_eq!(entries.len(), 2);
        let create_entry = entries
            .iter()
            .find(|e| e["manager"] == "kubectl-create")
            .expect("c");
        assert!(create_entry["fieldsV1"]["f:spec"]
            .get("f:replicas")
            .is_none());
        let scale_entry = entries
            .iter()
            .find(|e| e["manager"] == "kubectl-scale")
            .expect("s");
        assert_eq!(scale_entry["fieldsV1"], json!({"f:spec":{"f:replicas":{}}}));
        // No change: no new entry, time untouched.
        let same = track_update("Deployment", Some(&scaled), &scaled, "noop", None, T1);
        assert_eq!(
            same["metadata"]["managedFields"],
            scaled["metadata"]["managedFields"]
        );
    }

    #[test]
    fn track_update_status_subresource() {
        let pod = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
            "spec":{"containers":[{"name":"c","image":"i"}]}});
        let created = track_update("Pod", None, &pod, "kubectl", None, T0);
        let mut with_status = created.clone();
        with_status["status"] = json!({"phase":"Running"});
        let out = track_update(
            "Pod",
            Some(&created),
            &with_status,
            "kubelet",
            Some("status"),
            T1,
        );
        let entries = out["metadata"]["managedFields"]
            .as_array()
            .expect("entries");
        let kubelet = entries
            .iter()
            .find(|e| e["manager"] == "kubelet")
            .expect("kubelet");
        assert_eq!(kubelet["subresource"], "status");
        assert_eq!(kubelet["fieldsV1"], json!({"f:status":{"f:phase":{}}}));
    }

    /// `config` as `kubectl apply` (client-side) creates it: with the last-applied annotation and
    /// every field owned by `kubectl-client-side-apply` through an `Update` entry.
    fn client_side_applied(config: &Value) -> Value {
        let mut obj = config.clone();
        obj["metadata"]["annotations"] = json!({ LAST_APPLIED_ANNOTATION: go_json(config) });
        track_update(
            "Deployment",
            None,
            &obj,
            "kubectl-client-side-apply",
            None,
            T0,
        )
    }

    fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
        obj["metadata"]["managedFields"]
            .as_array()?
            .iter()
            .find(|e| e["manager"] == manager)
    }

    fn owns(obj: &Value, manager: &str, path: &[&str]) -> bool {
        entry(obj, manager).is_some_and(|e| {
            path.iter()
                .try_fold(&e["fieldsV1"], |node, key| node.get(key))
                .is_some()
        })
    }

    const REPLICAS: &[&str] = &["f:spec", "f:replicas"];
    const IMAGE: &[&str] = &[
        "f:spec",
        "f:template",
        "f:spec",
        "f:containers",
        "k:{\"name\":\"nginx\"}",
        "f:image",
    ];
    const TIER: &[&str] = &["f:metadata", "f:labels", "f:tier"];

    fn last_applied(obj: &Value) -> Value {
        let text = obj["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]
            .as_str()
            .expect("annotation");
        serde_json::from_str(text).expect("JSON")
    }

    fn conflict_fields(err: &ApplyError) -> Vec<(String, String)> {
        match err {
            ApplyError::Conflict { causes } => causes
                .iter()
                .map(|c| (c.manager.clone(), c.field.clone()))
                .collect(),
            other => panic!("not a conflict: {other:?}"),
        }
    }

    #[test]
    fn kubectl_takes_over_what_client_side_apply_set() {
        let mut config = deployment(2, "nginx:1");
        config["metadata"]["labels"]["tier"] = json!("be");
        let live = client_side_applied(&config);

        let mut next = deployment(3, "nginx:2");
        next["metadata"]["labels"]["tier"] = json!("fe");
        let out = apply("Deployment", Some(&live), &next, "kubectl", false, T1).expect("upgrade");
        assert_eq!(out.object["spec"]["replicas"], 3);
        assert_eq!(
            out.object["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:2"
        );
        for path in [REPLICAS, IMAGE, TIER] {
            assert!(owns(&out.object, "kubectl", path), "{path:?}");
            assert!(
                !owns(&out.object, "kubectl-client-side-apply", path),
                "{path:?}"
            );
        }
        // Unchanged fields are shared, as after a forced apply; the annotation stays with
        // client-side apply and now holds the applied configuration.
        assert!(owns(
            &out.object,
            "kubectl-client-side-apply",
            &["f:spec", "f:selector"]
        ));
        assert_eq!(last_applied(&out.object), next);

        // Only what is different from the live object was a conflict: applying the same
        // configuration by another manager is fine (shared), a different one conflicts as usual.
        let err = apply("Deployment", Some(&live), &next, "kubectl-other", false, T1)
            .expect_err("not kubectl");
        assert_eq!(conflict_fields(&err).len(), 3);
    }

    #[test]
    fn fields_changed_since_client_side_apply_still_conflict() {
        let mut config = deployment(2, "nginx:1");
        config["metadata"]["labels"]["tier"] = json!("be");
        let live = client_side_applied(&config);
        // kubectl scale, through the scale subresource; it sends no field manager, so the
        // server names it after the user agent: `kubectl`, like the applier, but an updater.
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        let scaled = track_update(
            "Deployment",
            Some(&live),
            &scaled,
            "kubectl",
            Some("scale"),
            T1,
        );
        // kubectl edit, with its own manager.
        let mut edited = scaled.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:edit");
        let edited = track_update(
            "Deployment",
            Some(&scaled),
            &edited,
            "kubectl-edit",
            None,
            T1,
        );

        // The manifest still says 2 replicas, changes the image and the label: the label may
        // transfer, the other two are reported, and only they.
        let mut next = deployment(2, "nginx:2");
        next["metadata"]["labels"]["tier"] = json!("fe");
        let err =
            apply("Deployment", Some(&edited), &next, "kubectl", false, T1).expect_err("conflict");
        assert_eq!(
            conflict_fields(&err),
            vec![
                ("kubectl".into(), ".spec.replicas".into()),
                (
                    "kubectl-edit".into(),
                    ".spec.template.spec.containers[name=\"nginx\"].image".into()
                ),
            ]
        );
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: \
             conflicts with \"kubectl\" with subresource \"scale\" using apps/v1:\n\
             - .spec.replicas\n\
             conflicts with \"kubectl-edit\" using apps/v1:\n\
             - .spec.template.spec.containers[name=\"nginx\"].image"
        );

        // Forced, kubectl's Apply entry gets all three; the scale and edit entries, which had
        // one field each, go.
        let out = apply("Deployment", Some(&edited), &next, "kubectl", true, T1).expect("force");
        for path in [REPLICAS, IMAGE, TIER] {
            assert!(owns(&out.object, "kubectl", path), "{path:?}");
        }
        assert_eq!(
            managers(&out.object),
            vec![
                ("kubectl".into(), "Apply".into()),
                ("kubectl-client-side-apply".into(), "Update".into()),
            ]
        );
    }

    #[test]
    fn upgrade_needs_a_usable_annotation() {
        let live = client_side_applied(&deployment(2, "nginx:1"));
        let next = deployment(3, "nginx:1");
        let with_annotation = |value: Value| {
            let mut obj = live.clone();
            obj["metadata"]["annotations"][LAST_APPLIED_ANNOTATION] = value;
            obj
        };
        let mut other_version = deployment(2, "nginx:1");
        other_version["apiVersion"] = json!("apps/v1beta1");
        let mut other_kind = deployment(2, "nginx:1");
        other_kind["kind"] = json!("ReplicaSet");
        for obj in [
            with_annotation(Value::Null),
            with_annotation(json!("")),
            with_annotation(json!("{not json")),
            with_annotation(json!(go_json(&other_version))),
            with_annotation(json!(go_json(&other_kind))),
        ] {
            let err = apply("Deployment", Some(&obj), &next, "kubectl", false, T1)
                .expect_err("no upgrade");
            assert_eq!(
                conflict_fields(&err),
                vec![("kubectl-client-side-apply".into(), ".spec.replicas".into())]
            );
        }
    }

    #[test]
    fn client_side_applied_fields_are_those_still_matching() {
        let mut config = deployment(2, "nginx:1");
        config["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(json!({"name": "gone", "image": "x"}));
        let mut live = deployment(4, "nginx:1");
        live["metadata"]["labels"]["extra"] = json!("live only");
        live["metadata"]["annotations"] = json!({ LAST_APPLIED_ANNOTATION: go_json(&config) });
        let set = client_side_applied_fields("Deployment", "apps/v1", &live).expect("annotation");
        let path = |p: &[&str]| -> Vec<PathElement> {
            p.iter()
                .map(|s| match s.split_at(2) {
                    ("f:", rest) => PathElement::Field(rest.to_owned()),
                    ("k:", rest) => PathElement::Key(rest.to_owned()),
                    _ => panic!("{s}"),
                })
                .collect()
        };
        assert!(set.contains(&path(IMAGE)));
        assert!(set.contains(&path(&["f:metadata", "f:labels", "f:app"])));
        assert!(set.contains(&path(&[
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"nginx\"}"
        ])));
        // Changed since.
        assert!(!set.contains(&path(REPLICAS)));
        // Never applied.
        assert!(!set.contains(&path(&["f:metadata", "f:labels", "f:extra"])));
        // Applied, since removed.
        assert!(!set.contains_at_or_below(&path(&[
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"gone\"}"
        ])));
        assert!(client_side_applied_fields("Deployment", "apps/v1", &deployment(1, "x")).is_none());
    }

    #[test]
    fn last_applied_is_kept_up_to_date_only_by_kubectl() {
        let live = client_side_applied(&deployment(2, "nginx:1"));
        let original = live["metadata"]["annotations"][LAST_APPLIED_ANNOTATION].clone();
        // Another manager: untouched (and it shares replicas, no conflict).
        let other = apply(
            "Deployment",
            Some(&live),
            &deployment(2, "nginx:1"),
            "deployer",
            false,
            T1,
        )
        .expect("shared");
        assert_eq!(
            other.object["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
            original
        );
        // kubectl: the applied configuration, without the annotation itself (which it may only
        // set with force: client-side apply owns it).
        let mut next = deployment(2, "nginx:<2>&");
        next["metadata"]["annotations"] = json!({
            LAST_APPLIED_ANNOTATION: "stale",
            "note": "kept",
        });
        let err = apply("Deployment", Some(&live), &next, "kubectl", false, T1)
            .expect_err("the annotation is not the last-applied one");
        assert_eq!(conflict_fields(&err).len(), 1);
        let out = apply("Deployment", Some(&live), &next, "kubectl", true, T1).expect("apply");
        let text = out.object["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]
            .as_str()
            .expect("annotation");
        let mut expected = next.clone();
        expected["metadata"]["annotations"] = json!({"note": "kept"});
        assert_eq!(last_applied(&out.object), expected);
        // Encoded as Go (and so kubectl) encodes it.
        assert!(text.starts_with("{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\","));
        assert!(text.contains("nginx:\\u003c2\\u003e\\u0026"), "{text}");
        assert!(text.ends_with("}\n"));
        assert_eq!(out.object["metadata"]["annotations"]["note"], "kept");

        // No annotation, none added; on create too.
        let plain = apply(
            "Deployment",
            None,
            &deployment(1, "nginx:1"),
            "kubectl",
            false,
            T0,
        )
        .expect("create");
        assert!(plain.object["metadata"].get("annotations").is_none());
        let created = apply("Deployment", None, &next, "kubectl", false, T0).expect("create");
        assert_eq!(last_applied(&created.object), expected);
    }

    #[test]
    fn oversized_last_applied_is_dropped() {
        let mut object = json!({"metadata": {"annotations": {
            LAST_APPLIED_ANNOTATION: "x",
            "big": "y".repeat(TOTAL_ANNOTATION_SIZE_LIMIT - 2000),
        }}});
        let mut config = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {}});
        config["data"]["k"] = json!("z".repeat(1000));
        update_last_applied(&mut object, &config);
        assert!(object["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]
            .as_str()
            .is_some_and(|t| t.len() > 1000));
        config["data"]["k"] = json!("z".repeat(3000));
        update_last_applied(&mut object, &config);
        assert!(object["metadata"]["annotations"]
            .get(LAST_APPLIED_ANNOTATION)
            .is_none());
        assert!(object["metadata"]["annotations"].get("big").is_some());
    }

    #[test]
    fn track_update_takes_managed_fields_from_the_client() {
        let live = client_side_applied(&deployment(2, "nginx:1"));
        let applied = apply(
            "Deployment",
            Some(&live),
            &deployment(3, "nginx:1"),
            "kubectl",
            false,
            T1,
        )
        .expect("upgrade")
        .object;
        assert!(entry(&applied, "kubectl-client-side-apply").is_some());

        // What kubectl sends after its first server-side apply: client-side apply's entry merged
        // into kubectl's.
        let mut migrated = applied.clone();
        let mut merged = entry(&applied, "kubectl").expect("kubectl").clone();
        merged["fieldsV1"] =
            entry(&applied, "kubectl-client-side-apply").expect("csa")["fieldsV1"].clone();
        merged["fieldsV1"]["f:spec"]["f:replicas"] = json!({});
        migrated["metadata"]["managedFields"] = json!([merged]);
        let out = track_update("Deployment", Some(&applied), &migrated, "kubectl", None, T1);
        assert_eq!(managers(&out), vec![("kubectl".into(), "Apply".into())]);
        assert!(owns(&out, "kubectl", REPLICAS) && owns(&out, "kubectl", IMAGE));

        // No managedFields in the request, or ones that do not decode: the live ones stay.
        let mut dropped = applied.clone();
        dropped["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("managedFields");
        let mut broken = applied.clone();
        broken["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Update"}]);
        for obj in [dropped, broken] {
            let out = track_update("Deployment", Some(&applied), &obj, "m", None, T1);
            assert_eq!(
                out["metadata"]["managedFields"],
                applied["metadata"]["managedFields"]
            );
        }

        // A reset, `[]` or `[{}]`: only this write's changes are tracked.
        for reset in [json!([]), json!([{}])] {
            let mut obj = applied.clone();
            obj["metadata"]["managedFields"] = reset;
            obj["spec"]["replicas"] = json!(7);
            let out = track_update("Deployment", Some(&applied), &obj, "m", None, T1);
            assert_eq!(managers(&out), vec![("m".into(), "Update".into())]);
            assert!(owns(&out, "m", REPLICAS));
        }

        // A subresource write never takes them.
        let out = track_update(
            "Deployment",
            Some(&applied),
            &migrated,
            "m",
            Some("status"),
            T1,
        );
        assert_eq!(
            out["metadata"]["managedFields"],
            applied["metadata"]["managedFields"]
        );
    }
}
