use super::*;
use crate::store::{SqliteStore, Store, StoreOptions};

fn server_with_data(dir: &Path) -> SqliteStore {
    std::fs::create_dir_all(dir.join("server/tls")).unwrap();
    std::fs::write(dir.join("server/tls/server-ca.crt"), "CA").unwrap();
    std::fs::write(dir.join("server/token"), "K10abc::server:secret").unwrap();
    let store = SqliteStore::open(&dir.join("server/db"), StoreOptions::default()).unwrap();
    store.create("/registry/configmaps/default/a", br#"{"uid":"u-a"}"#).unwrap();
    store.create("/registry/configmaps/default/b", br#"{"uid":"u-b"}"#).unwrap();
    store
}

#[test]
fn save_while_open_then_restore_onto_a_fresh_data_dir_keeps_everything() {
    let src = tempfile::tempdir().unwrap();
    let store = server_with_data(src.path());
    let paths = Paths::new(src.path(), None);
    // Taken while the store is open and has just written (the server runs).
    let info = save(&paths, ON_DEMAND_NAME, "node1").unwrap();
    store.update("/registry/configmaps/default/a", br#"{"uid":"u-a","late":1}"#, 1).unwrap();
    let rev_at_save = 2;
    assert!(info.name.starts_with("on-demand-node1-"), "{}", info.name);
    assert_eq!(list(&paths).unwrap(), vec![info.clone()]);
    let sum = std::fs::read_to_string(sidecar(&info.path)).unwrap();
    assert!(sum.ends_with(&format!("  {}.tar.gz\n", info.name)), "{sum}");

    let fresh = tempfile::tempdir().unwrap();
    let target = Paths::new(fresh.path(), None);
    assert_eq!(restore(&target, &info.path).unwrap(), rev_at_save);
    let restored = SqliteStore::open(&fresh.path().join("server/db"), StoreOptions::default()).unwrap();
    let a = restored.get("/registry/configmaps/default/a").unwrap().unwrap();
    assert_eq!(a.value, br#"{"uid":"u-a"}"#);
    assert_eq!(a.mod_revision, 1);
    assert!(restored.get("/registry/configmaps/default/b").unwrap().is_some());
    assert_eq!(std::fs::read_to_string(fresh.path().join("server/token")).unwrap(), "K10abc::server:secret");
    assert_eq!(std::fs::read_to_string(fresh.path().join("server/tls/server-ca.crt")).unwrap(), "CA");
}

#[test]
fn a_damaged_snapshot_is_refused_and_nothing_changes() {
    let src = tempfile::tempdir().unwrap();
    let _store = server_with_data(src.path());
    let paths = Paths::new(src.path(), None);
    let info = save(&paths, "x", "n").unwrap();
    let mut bytes = std::fs::read(&info.path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&info.path, &bytes).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let err = restore(&Paths::new(fresh.path(), None), &info.path).unwrap_err().to_string();
    assert!(err.starts_with("refusing snapshot") && err.contains("damaged or incomplete"), "{err}");
    assert!(!fresh.path().join("server/db/state.db").exists());
    assert!(!fresh.path().join("server/token").exists());
}

#[test]
fn restore_refuses_while_a_server_runs_on_the_data_dir() {
    let src = tempfile::tempdir().unwrap();
    let _store = server_with_data(src.path());
    let paths = Paths::new(src.path(), None);
    let info = save(&paths, "x", "n").unwrap();
    let err = restore(&paths, &info.path).unwrap_err().to_string();
    assert!(err.contains("stop it first"), "{err}");
}

#[test]
fn retention_prunes_only_old_scheduled_snapshots_of_this_node() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path(), None);
    std::fs::create_dir_all(&paths.snapshot_dir).unwrap();
    for name in [
        "etcd-snapshot-n1-100", "etcd-snapshot-n1-200", "etcd-snapshot-n1-300",
        "etcd-snapshot-n2-50", "on-demand-n1-10",
    ] {
        std::fs::write(paths.snapshot_dir.join(format!("{name}.tar.gz")), "x").unwrap();
        std::fs::write(paths.snapshot_dir.join(format!("{name}.tar.gz.sha256")), "x").unwrap();
    }
    assert_eq!(prune(&paths, "n1", 2).unwrap(), ["etcd-snapshot-n1-100"]);
    let left: Vec<_> = list(&paths).unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(left, ["on-demand-n1-10", "etcd-snapshot-n2-50", "etcd-snapshot-n1-200", "etcd-snapshot-n1-300"]);
    assert!(!paths.snapshot_dir.join("etcd-snapshot-n1-100.tar.gz.sha256").exists());
}

#[test]
fn without_a_sqlite_datastore_save_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let err = save(&Paths::new(dir.path(), None), "x", "n").unwrap_err().to_string();
    assert!(err.contains("SQLite only"), "{err}");
    assert!(matches!(save(&Paths::new(dir.path(), None), "../x", "n"), Err(SnapshotError::BadName(_))));
}

#[test]
fn the_default_schedule_parses() {
    assert!(schedule::parse("0 */12 * * *").is_ok());
    assert!(schedule::parse("nonsense").is_err());
}
