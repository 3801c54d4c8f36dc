//! One behavioural test suite that every [`Store`] implementation must pass.

use serde_json::{Map, json};

use super::{MAX_LOG, Store, StoreError, Update};
use crate::domain::cluster::ClusterSpec;
use crate::domain::{Cluster, ClusterId, ClusterStatus, Name, Part, Product, Timestamp};

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn product(n: &str, v: &str) -> Product {
    Product {
        name: name(n),
        version: name(v),
        description: format!("{n} {v}"),
        logo_url: None,
        created_at: Timestamp("2026-01-01T00:00:00.000Z".into()),
        updated_at: Timestamp("2026-01-01T00:00:00.000Z".into()),
        parts: Default::default(),
    }
}

fn cluster(n: &str, v: &str, at: &str) -> Cluster {
    let spec = ClusterSpec::parse(
        &json!({"nodes": {"a": {"docker_image": "i", "cpu": 1, "mem": 1}}}).to_string(),
    )
    .unwrap();
    Cluster::new(
        ClusterId::random(),
        "alice".into(),
        name(n),
        name(v),
        Map::new(),
        spec,
        "s".into(),
        Timestamp(at.into()),
    )
}

/// Writes one product with a cluster and returns the cluster id (for reopen tests).
pub fn seed(store: &dyn Store) -> ClusterId {
    store.create_product(&product("seed", "1")).unwrap();
    let c = cluster("seed", "1", "2026-01-01T00:00:00.000Z");
    store.create_cluster(&c).unwrap();
    c.id
}

pub fn run(store: &dyn Store) {
    products(store);
    parts(store);
    clusters(store);
    delete_guard(store);
    logs_and_meta(store);
    checked_create_and_purge(store);
}

fn products(store: &dyn Store) {
    store.create_product(&product("b", "1.0")).unwrap();
    store.create_product(&product("a", "2.0")).unwrap();
    store.create_product(&product("a", "10.0")).unwrap();
    assert!(matches!(
        store.create_product(&product("a", "2.0")),
        Err(StoreError::AlreadyExists(_))
    ));
    let all: Vec<String> = store
        .products()
        .unwrap()
        .iter()
        .map(|p| format!("{}/{}", p.name, p.version))
        .collect();
    assert_eq!(all, ["a/10.0", "a/2.0", "b/1.0"]);
    assert_eq!(
        store
            .product(&name("a"), &name("2.0"))
            .unwrap()
            .unwrap()
            .description,
        "a 2.0"
    );
    assert!(store.product(&name("a"), &name("3.0")).unwrap().is_none());
}

fn parts(store: &dyn Store) {
    let now = Timestamp("2026-02-01T00:00:00.000Z".into());
    let p = store
        .put_part(&name("a"), &name("2.0"), Part::Template, b"{{x}}", &now)
        .unwrap();
    assert!(p.parts.template && !p.parts.options && !p.parts.orchestrator);
    assert_eq!(p.updated_at, now);
    assert_eq!(
        store
            .part(&name("a"), &name("2.0"), Part::Template)
            .unwrap()
            .unwrap(),
        b"{{x}}"
    );
    assert!(
        store
            .part(&name("a"), &name("2.0"), Part::Options)
            .unwrap()
            .is_none()
    );
    // Replacing a part keeps one copy.
    store
        .put_part(&name("a"), &name("2.0"), Part::Template, b"v2", &now)
        .unwrap();
    assert_eq!(
        store
            .part(&name("a"), &name("2.0"), Part::Template)
            .unwrap()
            .unwrap(),
        b"v2"
    );
    assert!(
        store
            .product(&name("a"), &name("2.0"))
            .unwrap()
            .unwrap()
            .parts
            .template
    );
    // Another version does not see it.
    assert!(
        store
            .part(&name("a"), &name("10.0"), Part::Template)
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.put_part(&name("zz"), &name("1"), Part::Options, b"{}", &now),
        Err(StoreError::NotFound(_))
    ));
    assert!(store.product(&name("zz"), &name("1")).unwrap().is_none());
}

fn clusters(store: &dyn Store) {
    let c1 = cluster("a", "2.0", "2026-03-01T00:00:00.000Z");
    let c0 = cluster("a", "2.0", "2026-02-01T00:00:00.000Z");
    store.create_cluster(&c1).unwrap();
    store.create_cluster(&c0).unwrap();
    assert!(matches!(
        store.create_cluster(&c0),
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        store.create_cluster(&cluster("nope", "1", "x")),
        Err(StoreError::NotFound(_))
    ));
    let ids: Vec<ClusterId> = store
        .clusters()
        .unwrap()
        .iter()
        .map(|c| c.id)
        .filter(|id| *id == c0.id || *id == c1.id)
        .collect();
    assert_eq!(ids, [c0.id, c1.id], "oldest first");
    assert_eq!(store.cluster(c1.id).unwrap().unwrap(), c1);
    assert!(store.cluster(ClusterId::random()).unwrap().is_none());

    let updated = store
        .update_cluster(c1.id, &mut |c| {
            c.status = ClusterStatus::Scheduling;
            Ok(Update::Write)
        })
        .unwrap();
    assert_eq!(updated.status, ClusterStatus::Scheduling);
    assert_eq!(
        store.cluster(c1.id).unwrap().unwrap().status,
        ClusterStatus::Scheduling
    );

    // Keep and Rejected leave the record as it was.
    store
        .update_cluster(c1.id, &mut |c| {
            c.status = ClusterStatus::Failed;
            Ok(Update::Keep)
        })
        .unwrap();
    let err = store.update_cluster(c1.id, &mut |c| {
        c.status = ClusterStatus::Failed;
        Err("no".into())
    });
    assert!(matches!(err, Err(StoreError::Rejected(m)) if m == "no"));
    assert_eq!(
        store.cluster(c1.id).unwrap().unwrap().status,
        ClusterStatus::Scheduling
    );
    assert!(matches!(
        store.update_cluster(ClusterId::random(), &mut |_| Ok(Update::Write)),
        Err(StoreError::NotFound(_))
    ));

    // Concurrent read-modify-writes lose nothing.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..25 {
                    store
                        .update_cluster(c0.id, &mut |c| {
                            c.nodes[0].observed.attempt += 1;
                            Ok(Update::Write)
                        })
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(
        store.cluster(c0.id).unwrap().unwrap().nodes[0]
            .observed
            .attempt,
        100
    );
}

fn delete_guard(store: &dyn Store) {
    // a/2.0 has clusters: the guard sees them and refuses; nothing is deleted.
    let seen = std::cell::Cell::new(0);
    let err = store.delete_product(&name("a"), &name("2.0"), &|users| {
        seen.set(users.len());
        Err("in use".into())
    });
    assert!(matches!(err, Err(StoreError::Rejected(_))));
    assert_eq!(seen.get(), 2);
    assert!(store.product(&name("a"), &name("2.0")).unwrap().is_some());
    assert!(
        store
            .part(&name("a"), &name("2.0"), Part::Template)
            .unwrap()
            .is_some()
    );

    store
        .delete_product(&name("a"), &name("2.0"), &|_| Ok(()))
        .unwrap();
    assert!(store.product(&name("a"), &name("2.0")).unwrap().is_none());
    assert!(
        store
            .part(&name("a"), &name("2.0"), Part::Template)
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.delete_product(&name("a"), &name("2.0"), &|_| Ok(())),
        Err(StoreError::NotFound(_))
    ));
    // The other version is untouched.
    assert!(store.product(&name("a"), &name("10.0")).unwrap().is_some());
}

fn logs_and_meta(store: &dyn Store) {
    let id = ClusterId::random();
    assert!(store.log(id).unwrap().is_empty());
    store.append_log(id, b"one\n").unwrap();
    store.append_log(id, b"two\n").unwrap();
    assert_eq!(store.log(id).unwrap(), b"one\ntwo\n");
    store.append_log(id, &vec![b'x'; MAX_LOG]).unwrap();
    let log = store.log(id).unwrap();
    assert_eq!(log.len(), MAX_LOG);
    assert!(log.iter().all(|b| *b == b'x'), "oldest output is cut first");

    assert!(store.meta("framework_id").unwrap().is_none());
    store.set_meta("framework_id", "abc-0001").unwrap();
    assert_eq!(
        store.meta("framework_id").unwrap().as_deref(),
        Some("abc-0001")
    );
    store.flush().unwrap();
}

fn checked_create_and_purge(store: &dyn Store) {
    store.create_product(&product("q", "1")).unwrap();
    let first = cluster("q", "1", "2026-04-01T00:00:00.000Z");
    store.create_cluster(&first).unwrap();
    // The guard sees every stored cluster; its refusal writes nothing.
    let second = cluster("q", "1", "2026-04-02T00:00:00.000Z");
    let seen = std::cell::Cell::new(0);
    let err = store.create_cluster_checked(&second, &|all| {
        seen.set(all.iter().filter(|c| c.product == name("q")).count());
        Err("quota".into())
    });
    assert!(matches!(err, Err(StoreError::Rejected(m)) if m == "quota"));
    assert_eq!(seen.get(), 1);
    assert!(store.cluster(second.id).unwrap().is_none());
    store.create_cluster_checked(&second, &|_| Ok(())).unwrap();
    assert!(matches!(
        store.create_cluster_checked(&second, &|_| Ok(())),
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        store.create_cluster_checked(&cluster("nope", "1", "x"), &|_| Ok(())),
        Err(StoreError::NotFound(_))
    ));

    // A purge takes the record and its logs together, only if the guard agrees.
    store.append_log(first.id, b"output\n").unwrap();
    store.append_log(second.id, b"kept\n").unwrap();
    assert!(!store.purge_cluster(first.id, &|_| false).unwrap());
    assert!(store.cluster(first.id).unwrap().is_some());
    assert_eq!(store.log(first.id).unwrap(), b"output\n");
    let judged = std::cell::RefCell::new(None);
    assert!(
        store
            .purge_cluster(first.id, &|c| {
                *judged.borrow_mut() = Some(c.id);
                true
            })
            .unwrap()
    );
    assert_eq!(*judged.borrow(), Some(first.id));
    assert!(store.cluster(first.id).unwrap().is_none());
    assert!(store.log(first.id).unwrap().is_empty());
    assert!(!store.purge_cluster(first.id, &|_| true).unwrap(), "gone");
    assert!(store.cluster(second.id).unwrap().is_some(), "others stay");
    assert_eq!(store.log(second.id).unwrap(), b"kept\n");
}
