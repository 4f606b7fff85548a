use super::*;
use crate::store::{SqliteStore, Store, StoreOptions};

fn raw_contains(store: &EncryptingStore, key: &str, needle: &[u8]) -> bool {
    let raw = store.inner().get(key).unwrap().unwrap().value;
    raw.windows(needle.len()).any(|w| w == needle)
}

fn encrypting(keys: KeySet) -> EncryptingStore {
    let inner: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory(StoreOptions::default()).unwrap());
    EncryptingStore::new(inner, SECRETS_PREFIX, keys)
}

#[test]
fn secrets_are_ciphertext_below_and_plaintext_above() {
    let store = encrypting(KeySet::generate());
    let key = "/registry/secrets/default/s";
    let r = store.create(key, b"{\"data\":\"topsecret\"}").unwrap();
    assert_eq!(r.value, b"{\"data\":\"topsecret\"}");
    assert!(!raw_contains(&store, key, b"topsecret"));
    assert!(raw_contains(&store, key, b"k8s:enc:aesgcm:v1:"));
    assert_eq!(store.get(key).unwrap().unwrap().value, b"{\"data\":\"topsecret\"}");
    let page = store.list(&ListOptions { prefix: "/registry/".into(), ..Default::default() }).unwrap();
    assert_eq!(page.records[0].value, b"{\"data\":\"topsecret\"}");
    // Other kinds are untouched.
    store.create("/registry/configmaps/default/c", b"plain").unwrap();
    assert!(raw_contains(&store, "/registry/configmaps/default/c", b"plain"));
}

#[test]
fn rotation_rewrites_every_secret_and_drops_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let first = KeySet::generate();
    let store = encrypting(first.clone());
    for i in 0..250 {
        store.create(&format!("/registry/secrets/ns/s{i:03}"), format!("value-{i}").as_bytes()).unwrap();
    }
    let old_name = primary_name(&first);
    let rotated = first.with_new_primary();
    save(dir.path(), &rotated).unwrap();
    apply(&store, dir.path(), load(dir.path()).unwrap().unwrap()).unwrap();
    let state = read_state(dir.path()).unwrap();
    assert_eq!((state.stage.as_str(), state.rewritten), ("reencrypt_finished", 250));
    assert_ne!(state.primary, old_name);
    let on_disk = load(dir.path()).unwrap().unwrap();
    assert_eq!(on_disk.all_keys().len(), 1, "the old key is gone once unused");
    assert!(!raw_contains(&store, "/registry/secrets/ns/s007", old_name.as_bytes()));
    assert_eq!(store.get("/registry/secrets/ns/s249").unwrap().unwrap().value, b"value-249");
    // Disable: everything back to plaintext.
    save(dir.path(), &on_disk.disable()).unwrap();
    apply(&store, dir.path(), load(dir.path()).unwrap().unwrap()).unwrap();
    assert!(raw_contains(&store, "/registry/secrets/ns/s001", b"value-1"));
}

#[test]
fn startup_creates_keys_only_with_the_flag_and_the_file_wins_after() {
    let dir = tempfile::tempdir().unwrap();
    let cred = dir.path().join("cred");
    assert!(!startup_keys(&cred, false).unwrap().enabled());
    assert!(!cred.join(CONFIG_FILE).exists());
    assert!(startup_keys(&cred, true).unwrap().enabled());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cred.join(CONFIG_FILE)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(startup_keys(&cred, false).unwrap().enabled(), "the file decides once it exists");
}

#[tokio::test]
async fn watches_see_plaintext() {
    let store = encrypting(KeySet::generate());
    let mut rx = store.watch("/registry/secrets/", 0).unwrap();
    store.create("/registry/secrets/a/b", b"watched-value").unwrap();
    let ev = rx.recv().await.unwrap().unwrap();
    assert_eq!(ev.record.value, b"watched-value");
}
