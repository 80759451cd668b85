//! `metadata.generateName`: [`generate_name`] appends 5 characters from upstream's alphabet
//! (`bcdfghjklmnpqrstvwxz2456789`) to the base cut to 58 bytes, and [`resolve_generate_name`]
//! fills `metadata.name` from it on create.

use serde_json::Value;

/// Characters upstream's `utilrand.String` draws from (no vowels, no look-alikes).
pub const GENERATE_NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Number of random characters appended.
pub const GENERATE_NAME_RANDOM_LENGTH: usize = 5;
const MAX_GENERATED_BASE: usize = 63 - GENERATE_NAME_RANDOM_LENGTH;

/// `base` (cut to 58 bytes) followed by 5 random characters, drawn from `rng`.
pub fn generate_name_with<R: rand::Rng + ?Sized>(base: &str, rng: &mut R) -> String {
    let mut cut = base.len().min(MAX_GENERATED_BASE);
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut name = base[..cut].to_owned();
    for _ in 0..GENERATE_NAME_RANDOM_LENGTH {
        let i = rng.random_range(0..GENERATE_NAME_ALPHABET.len());
        name.push(char::from(GENERATE_NAME_ALPHABET[i]));
    }
    name
}

/// [`generate_name_with`] using the thread-local RNG.
pub fn generate_name(base: &str) -> String {
    generate_name_with(base, &mut rand::rng())
}

/// If `obj` has no `metadata.name` but a `generateName`, sets a generated name and returns it.
/// The server retries with a fresh name when the create hits AlreadyExists (upstream retries
/// up to 7 times since 1.30).
pub fn resolve_generate_name(obj: &mut Value) -> Option<String> {
    let meta = obj.get_mut("metadata")?.as_object_mut()?;
    let has_name = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if has_name {
        return None;
    }
    let base = meta.get("generateName")?.as_str()?.to_owned();
    if base.is_empty() {
        return None;
    }
    let name = generate_name(&base);
    meta.insert("name".to_owned(), Value::from(name.clone()));
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use serde_json::json;

    #[test]
    fn generate_name_shape() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let name = generate_name_with("web-", &mut rng);
        assert_eq!(name.len(), 9);
        assert!(name.starts_with("web-"));
        assert!(name[4..]
            .bytes()
            .all(|b| GENERATE_NAME_ALPHABET.contains(&b)));
        let long = "x".repeat(80);
        assert_eq!(generate_name(&long).len(), 63);

        let mut obj = json!({"metadata":{"generateName":"job-"}});
        let name = resolve_generate_name(&mut obj).expect("generated");
        assert_eq!(obj["metadata"]["name"], name.as_str());
        assert!(resolve_generate_name(&mut obj).is_none());
    }
}
