//! One behavioural test suite that every [`Store`] implementation must pass.

use serde_json::{Map, json};

use super::{
    BatchUpdate, Commit, Counts, ListFilter, MAX_LOG, Store, StoreError, Update, cursor_of,
};
use crate::domain::cluster::ClusterSpec;
use crate::domain::{
    Cluster, ClusterId, ClusterStatus, Name, NodeStatus, Part, Product, Timestamp, Usage,
};

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

pub fn product(n: &str, v: &str) -> Product {
    Product {
        name: name(n),
        version: name(v),
        description: format!("{n} {v}"),
        logo_url: None,
        created_at: Timestamp("2026-01-01T00:00:00.000Z".into()),
        updated_at: Timestamp("2026-01-01T00:00:00.000Z".into()),
        parts: Default::default(),
        files: None,
    }
}

fn cluster(n: &str, v: &str, at: &str) -> Cluster {
    cluster_of("alice", n, v, at)
}

fn cluster_of(owner: &str, n: &str, v: &str, at: &str) -> Cluster {
    cluster_with(owner, n, v, at, &["a", "b"])
}

/// A new cluster of product `n`/`v` with the nodes `nodes`, created at `at`.
pub fn cluster_with(owner: &str, n: &str, v: &str, at: &str, nodes: &[&str]) -> Cluster {
    let nodes: Map<String, serde_json::Value> = nodes
        .iter()
        .map(|n| {
            let node = json!({"docker_image": "i", "cpu": 1, "mem": 1});
            (n.to_string(), node)
        })
        .collect();
    let spec = ClusterSpec::parse(&json!({ "nodes": nodes }).to_string()).unwrap();
    Cluster::new(
        ClusterId::generate(),
        owner.into(),
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
    store.create_cluster(c.clone()).unwrap();
    c.id
}

pub fn run(store: &dyn Store) {
    products(store);
    parts(store);
    bundles(store);
    clusters(store);
    delete_guard(store);
    logs_and_meta(store);
    checked_create_and_purge(store);
    checked_creates_race(store);
    creates_race_a_product_delete(store);
    pending_creates(store);
    node_changes(store);
    reads_are_consistent(store);
    batches(store);
    commits_in_order(store);
    pages(store);
    mixed_sequence(store);
    catalog_generations(store);
    assert_counts(store);
}

/// The kept counts equal the counts of every stored cluster, and what each owner holds
/// ([`Store::usage`]) equals what their stored clusters hold.
pub fn assert_counts(store: &dyn Store) {
    let all = store.clusters().unwrap();
    assert_eq!(store.counts().unwrap(), Counts::of(&all), "kept counts");
    let mut owners: Vec<&str> = all.iter().map(|c| c.owner.as_str()).collect();
    owners.extend(["nobody", ""]);
    owners.dedup();
    for owner in owners {
        assert_same_usage(store.usage(owner), Usage::of_owner(owner, &all), owner);
    }
}

/// Equal counts, and amounts equal to a thousandth (the sled store keeps thousandths).
fn assert_same_usage(kept: Usage, want: Usage, owner: &str) {
    assert!(
        kept.clusters == want.clusters
            && kept.nodes == want.nodes
            && (kept.cpus - want.cpus).abs() < 1e-6
            && (kept.mem - want.mem).abs() < 1e-6,
        "usage of {owner:?}: kept {kept:?}, stored clusters hold {want:?}"
    );
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

/// A bundle creates a version with every part, and replacing it keeps its creation time.
fn bundles(store: &dyn Store) {
    let mut p = product("bundled", "1");
    p.files = Some(crate::domain::BundleFiles::default());
    let parts: [(Part, &[u8]); 3] = [
        (Part::Template, b"t1"),
        (Part::Options, b"{}"),
        (Part::Orchestrator, b"s1"),
    ];
    let (stored, new) = store.put_bundle(&p, &parts).unwrap();
    assert!(new);
    assert!(stored.parts.template && stored.parts.options && stored.parts.orchestrator);
    assert_eq!(store.product(&p.name, &p.version).unwrap().unwrap(), stored);
    let mut again = p.clone();
    again.description = "second".into();
    again.created_at = Timestamp("2027-01-01T00:00:00.000Z".into());
    again.updated_at = again.created_at.clone();
    let (stored, new) = store
        .put_bundle(&again, &[(Part::Template, b"t2")])
        .unwrap();
    assert!(!new);
    assert_eq!(stored.created_at, p.created_at, "creation time is kept");
    assert_eq!(stored.description, "second");
    assert!(stored.parts.orchestrator, "parts it did not carry stay set");
    let read = |part| store.part(&p.name, &p.version, part).unwrap().unwrap();
    assert_eq!(read(Part::Template), b"t2");
    assert_eq!(read(Part::Orchestrator), b"s1");
    store
        .delete_product(&p.name, &p.version, &|_| Ok(()))
        .unwrap();
    assert!(
        store
            .part(&p.name, &p.version, Part::Template)
            .unwrap()
            .is_none()
    );
}

fn clusters(store: &dyn Store) {
    let c1 = cluster("a", "2.0", "2026-03-01T00:00:00.000Z");
    let c0 = cluster("a", "2.0", "2026-02-01T00:00:00.000Z");
    store.create_cluster(c1.clone()).unwrap();
    store.create_cluster(c0.clone()).unwrap();
    assert!(matches!(
        store.create_cluster(c0.clone()),
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        store.create_cluster(cluster("nope", "1", "x")),
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
    assert!(store.cluster(ClusterId::generate()).unwrap().is_none());

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
        store.update_cluster(ClusterId::generate(), &mut |_| Ok(Update::Write)),
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
    let id = ClusterId::generate();
    assert!(store.log(id).unwrap().is_empty());
    let mut announced = store.subscribe_logs();
    store.append_log(id, b"one\n").unwrap();
    let got = announced.try_recv().expect("a durable append is announced");
    assert_eq!((got.id, &got.data[..]), (id, &b"one\n"[..]));
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

/// Concurrent creates whose guard admits a cluster only below a limit of the owner's: the
/// guard's read and the create are one step, so exactly the limit is admitted, however the
/// threads interleave.
fn checked_creates_race(store: &dyn Store) {
    const LIMIT: u64 = 5;
    store.create_product(&product("race", "1")).unwrap();
    let admitted = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let admitted = &admitted;
            s.spawn(move || {
                for i in 0..4 {
                    let at = format!("2026-06-01T00:00:{t:02}.{i:03}Z");
                    let c = cluster_of("racer", "race", "1", &at);
                    let r = store.create_cluster_checked(c, &|has| {
                        // A slow check: without one step from check to create, the others
                        // would all check the same usage meanwhile.
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        if has.clusters < LIMIT {
                            Ok(())
                        } else {
                            Err("full".into())
                        }
                    });
                    match r {
                        Ok(()) => {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(StoreError::Rejected(m)) => assert_eq!(m, "full"),
                        Err(e) => panic!("{e:?}"),
                    }
                }
            });
        }
    });
    assert_eq!(admitted.into_inner(), LIMIT);
    assert_eq!(store.usage("racer").clusters, LIMIT);
}

/// Creates (no quota check) against the delete of their product, which its guard allows
/// only while no cluster uses it: either the delete comes first and every later create
/// fails, or a create does and the delete is refused. Never a cluster of a deleted product.
/// (A race: with creates that skip the catalog lock it failed in two runs of three.)
fn creates_race_a_product_delete(store: &dyn Store) {
    const RACER: &str = "del-racer";
    for round in 0..120 {
        let before = store.usage(RACER).clusters;
        let version = format!("r{round}");
        store.create_product(&product("del", &version)).unwrap();
        let start = std::sync::Barrier::new(4);
        let deleted = std::thread::scope(|s| {
            for t in 0..3 {
                let (start, version) = (&start, &version);
                s.spawn(move || {
                    start.wait();
                    for i in 0..3 {
                        let at = format!(
                            "2026-07-01T{:02}:{:02}:{t:02}.{i:03}Z",
                            round / 60,
                            round % 60
                        );
                        match store.create_cluster(cluster_of(RACER, "del", version, &at)) {
                            Ok(()) | Err(StoreError::NotFound(_)) => {}
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                });
            }
            start.wait();
            store
                .delete_product(&name("del"), &name(&version), &|users| {
                    if users.is_empty() {
                        Ok(())
                    } else {
                        Err("in use".into())
                    }
                })
                .is_ok()
        });
        // The racer's clusters are all of `del`: its count says what this round stored.
        let users = store.usage(RACER).clusters - before;
        assert!(
            !(deleted && users > 0),
            "round {round}: {users} clusters of a deleted product"
        );
        assert_eq!(
            store
                .product(&name("del"), &name(&version))
                .unwrap()
                .is_some(),
            !deleted
        );
    }
}

fn checked_create_and_purge(store: &dyn Store) {
    store.create_product(&product("q", "1")).unwrap();
    // What the suite's earlier steps left.
    let (alice, bob) = (store.usage("alice"), store.usage("bob"));
    let first = cluster("q", "1", "2026-04-01T00:00:00.000Z");
    store.create_cluster(first.clone()).unwrap();
    let elsewhere = cluster_of("bob", "q", "1", "2026-04-01T12:00:00.000Z");
    store.create_cluster(elsewhere.clone()).unwrap();
    let mut gone = cluster("q", "1", "2026-04-01T06:00:00.000Z");
    gone.status = ClusterStatus::Destroyed;
    store.create_cluster(gone.clone()).unwrap();
    // The guard sees what the owner's stored clusters that are not destroyed hold (here
    // `first`: two nodes of 1 cpu and 1 MB), not another owner's; its refusal writes
    // nothing.
    let one = Usage {
        clusters: 1,
        nodes: 2,
        cpus: 2.0,
        mem: 2.0,
    };
    assert_eq!(store.usage("alice"), alice.plus(one));
    assert_eq!(store.usage("bob"), bob.plus(one));
    assert_eq!(store.usage("carol"), Usage::default());
    let second = cluster("q", "1", "2026-04-02T00:00:00.000Z");
    let seen = std::cell::Cell::new(None);
    let err = store.create_cluster_checked(second.clone(), &|has| {
        seen.set(Some(has));
        Err("quota".into())
    });
    assert!(matches!(err, Err(StoreError::Rejected(m)) if m == "quota"));
    assert_eq!(seen.get(), Some(alice.plus(one)));
    assert!(store.cluster(second.id).unwrap().is_none());
    assert_eq!(
        store.usage("alice"),
        alice.plus(one),
        "a refused create holds nothing"
    );
    store
        .create_cluster_checked(second.clone(), &|_| Ok(()))
        .unwrap();
    assert_eq!(store.usage("alice"), alice.plus(one).plus(one));
    // A cluster destroyed since holds nothing; the new one holds its part.
    store
        .update_cluster(first.id, &mut |c| {
            c.status = ClusterStatus::Destroyed;
            Ok(Update::Write)
        })
        .unwrap();
    let third = cluster("q", "1", "2026-04-03T00:00:00.000Z");
    store
        .create_cluster_checked(third, &|has| {
            seen.set(Some(has));
            Ok(())
        })
        .unwrap();
    assert_eq!(seen.get(), Some(alice.plus(one)), "second, not first");
    assert_eq!(store.usage("alice"), alice.plus(one).plus(one));
    assert_counts(store);
    assert!(matches!(
        store.create_cluster_checked(second.clone(), &|_| Ok(())),
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        store.create_cluster_checked(cluster("nope", "1", "x"), &|_| Ok(())),
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

/// A pending create is committed when it returns (readers and the owner's usage see it) and
/// is announced once durable, also when nobody awaits it; a refused or clashing one writes
/// nothing, as the durable create.
fn pending_creates(store: &dyn Store) {
    store.create_product(&product("pend", "1")).unwrap();
    let before = store.usage("pender");
    let mut rx = store.subscribe();
    let awaited = cluster_of("pender", "pend", "1", "2026-04-05T00:00:00.000Z");
    let dropped = cluster_of("pender", "pend", "1", "2026-04-05T00:00:01.000Z");
    let pending = store
        .create_cluster_pending(awaited.clone(), Some(&|_| Ok(())))
        .unwrap();
    assert_eq!(store.cluster(awaited.id).unwrap().as_ref(), Some(&awaited));
    assert_eq!(store.usage("pender").clusters, before.clusters + 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(pending.on_disk()).unwrap();
    drop(store.create_cluster_pending(dropped.clone(), None).unwrap());
    let mut announced = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while announced.len() < 2 {
        match rx.try_recv() {
            Ok(Commit::Cluster(c)) => announced.push(c.id),
            Ok(_) => {}
            Err(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "announced: {announced:?}"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
    assert_eq!(announced, [awaited.id, dropped.id]);
    let refused = cluster_of("pender", "pend", "1", "2026-04-05T00:00:02.000Z");
    let err = store.create_cluster_pending(refused.clone(), Some(&|_| Err("no".into())));
    assert!(matches!(err, Err(StoreError::Rejected(m)) if m == "no"));
    assert!(store.cluster(refused.id).unwrap().is_none());
    assert!(matches!(
        store.create_cluster_pending(awaited.clone(), Some(&|_| Ok(()))),
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(store.usage("pender").clusters, before.clusters + 2);
    assert_counts(store);
}

/// Nodes removed, added and reordered by an update read back as written; the other nodes
/// are untouched.
fn node_changes(store: &dyn Store) {
    store.create_product(&product("n", "1")).unwrap();
    let c = cluster("n", "1", "2026-05-01T00:00:00.000Z");
    store.create_cluster(c.clone()).unwrap();
    let written = store
        .update_cluster(c.id, &mut |c| {
            let mut added = c.nodes[0].clone();
            added.name = name("z");
            added.observed.status = NodeStatus::Running;
            c.nodes.remove(0);
            c.nodes.insert(0, added);
            c.nodes[1].observed.status = NodeStatus::Staging;
            Ok(Update::Write)
        })
        .unwrap();
    let names: Vec<&str> = written.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["z", "b"]);
    assert_eq!(store.cluster(c.id).unwrap().unwrap(), written);
    assert_eq!(
        serde_json::to_string(&store.cluster(c.id).unwrap().unwrap()).unwrap(),
        serde_json::to_string(&written).unwrap()
    );
    // Two nodes of one name are refused; nothing is written.
    let err = store.update_cluster(c.id, &mut |c| {
        let twin = c.nodes[0].clone();
        c.nodes.push(twin);
        Ok(Update::Write)
    });
    assert!(matches!(err, Err(StoreError::Rejected(_))), "{err:?}");
    assert_eq!(store.cluster(c.id).unwrap().unwrap(), written);
    // So are they when a rename makes them, the number of nodes unchanged.
    let err = store.update_cluster(c.id, &mut |c| {
        c.nodes[1].name = c.nodes[0].name.clone();
        Ok(Update::Write)
    });
    assert!(matches!(err, Err(StoreError::Rejected(_))), "{err:?}");
    assert_eq!(store.cluster(c.id).unwrap().unwrap(), written);
    let err = store.update_cluster(c.id, &mut |c| {
        c.id = ClusterId::generate();
        Ok(Update::Write)
    });
    assert!(matches!(err, Err(StoreError::Rejected(_))), "{err:?}");
    assert_eq!(store.cluster(c.id).unwrap().unwrap(), written);
    assert_counts(store);
}

/// Each entry of a batch gets what `update_cluster` would give it, in order.
fn batches(store: &dyn Store) {
    store.create_product(&product("bt", "1")).unwrap();
    let a = cluster("bt", "1", "2026-06-01T00:00:00.000Z");
    let b = cluster("bt", "1", "2026-06-02T00:00:00.000Z");
    store.create_cluster(a.clone()).unwrap();
    store.create_cluster(b.clone()).unwrap();
    let mut schedule = |c: &mut Cluster| -> Result<Update, String> {
        c.status = ClusterStatus::Scheduling;
        Ok(Update::Write)
    };
    let mut refuse = |c: &mut Cluster| -> Result<Update, String> {
        c.status = ClusterStatus::Failed;
        Err("no".to_string())
    };
    let mut keep = |c: &mut Cluster| -> Result<Update, String> {
        c.status = ClusterStatus::Failed;
        Ok(Update::Keep)
    };
    // Sees the first entry's write.
    let mut run_a = |c: &mut Cluster| -> Result<Update, String> {
        assert_eq!(c.status, ClusterStatus::Scheduling);
        c.nodes[1].observed.status = NodeStatus::Running;
        Ok(Update::Write)
    };
    let mut never = |_: &mut Cluster| -> Result<Update, String> { Ok(Update::Write) };
    let unknown = ClusterId::generate();
    let mut batch: [BatchUpdate<'_>; 5] = [
        (a.id, &mut schedule),
        (unknown, &mut never),
        (b.id, &mut refuse),
        (a.id, &mut keep),
        (a.id, &mut run_a),
    ];
    let results = store.update_clusters(&mut batch);
    assert_eq!(results.len(), 5);
    let stored_a = store.cluster(a.id).unwrap().unwrap();
    assert_eq!(
        results[0].as_ref().unwrap().status,
        ClusterStatus::Scheduling
    );
    assert!(matches!(&results[1], Err(StoreError::NotFound(_))));
    assert!(matches!(&results[2], Err(StoreError::Rejected(m)) if m == "no"));
    // Keep returns the record as `f` left it, and writes nothing.
    assert_eq!(results[3].as_ref().unwrap().status, ClusterStatus::Failed);
    assert_eq!(**results[4].as_ref().unwrap(), stored_a);
    assert_eq!(stored_a.status, ClusterStatus::Scheduling);
    assert_eq!(stored_a.nodes[1].observed.status, NodeStatus::Running);
    assert_eq!(
        store.cluster(b.id).unwrap().unwrap(),
        b,
        "refused: untouched"
    );
    assert!(store.update_clusters(&mut []).is_empty());
    assert_counts(store);
}

/// A subscriber sees one cluster's commits in commit order, and its last commit.
fn commits_in_order(store: &dyn Store) {
    store.create_product(&product("co", "1")).unwrap();
    let c = cluster("co", "1", "2026-07-01T00:00:00.000Z");
    let mut rx = store.subscribe();
    store.create_cluster(c.clone()).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20 {
                    store
                        .update_cluster(c.id, &mut |c| {
                            c.nodes[0].observed.attempt += 1;
                            Ok(Update::Write)
                        })
                        .unwrap();
                }
            });
        }
    });
    assert!(store.purge_cluster(c.id, &|_| true).unwrap());
    let mut attempts = Vec::new();
    let mut purged = false;
    while let Ok(commit) = rx.try_recv() {
        match commit {
            Commit::Cluster(r) if r.id == c.id => {
                assert!(!purged, "a commit after the purge");
                attempts.push(r.nodes[0].observed.attempt);
            }
            Commit::Purged(id) if id == c.id => purged = true,
            _ => {}
        }
    }
    assert!(purged);
    assert_eq!(attempts.first(), Some(&0), "the create");
    assert_eq!(attempts.last(), Some(&80), "the last commit");
    assert!(
        attempts.windows(2).all(|w| w[0] < w[1]),
        "in commit order: {attempts:?}"
    );
}

/// Pages of every filter, at several sizes, walked with their cursors, list exactly the
/// clusters that a scan of every cluster finds, in the same order.
fn pages(store: &dyn Store) {
    store.create_product(&product("pg", "1")).unwrap();
    store.create_product(&product("pg", "2")).unwrap();
    let owners = ["alice", "bob", "carol"];
    for i in 0..12 {
        let version = if i % 4 == 0 { "2" } else { "1" };
        let c = cluster_of(
            owners[i % 3],
            "pg",
            version,
            &format!("2026-08-01T00:00:{i:02}.000Z"),
        );
        store.create_cluster(c.clone()).unwrap();
        if i % 2 == 1 {
            store
                .update_cluster(c.id, &mut |c| {
                    c.status = ClusterStatus::Scheduling;
                    Ok(Update::Write)
                })
                .unwrap();
        }
    }
    let filters = [
        ListFilter::default(),
        ListFilter {
            owner: Some("bob".into()),
            ..ListFilter::default()
        },
        ListFilter {
            status: Some(ClusterStatus::Scheduling),
            ..ListFilter::default()
        },
        ListFilter {
            product: Some("pg".into()),
            ..ListFilter::default()
        },
        ListFilter {
            version: Some("2".into()),
            ..ListFilter::default()
        },
        ListFilter {
            owner: Some("alice".into()),
            status: Some(ClusterStatus::Scheduling),
            ..ListFilter::default()
        },
        ListFilter {
            status: Some(ClusterStatus::Registered),
            product: Some("pg".into()),
            version: Some("1".into()),
            ..ListFilter::default()
        },
        ListFilter {
            owner: Some("nobody".into()),
            ..ListFilter::default()
        },
    ];
    let all = store.clusters().unwrap();
    for filter in &filters {
        let expected: Vec<ClusterId> = all
            .iter()
            .filter(|c| filter.matches(c))
            .map(|c| c.id)
            .collect();
        for limit in [1, 2, 5, 1000] {
            let mut listed = Vec::new();
            let mut cursor = None;
            loop {
                let page = store
                    .clusters_page(filter, limit, cursor.as_deref())
                    .unwrap();
                assert!(page.clusters.len() <= limit);
                assert!(page.clusters.iter().all(|c| filter.matches(c)));
                listed.extend(page.clusters.iter().map(|c| c.id));
                match page.next {
                    Some(next) => {
                        assert_eq!(page.clusters.len(), limit, "only a last page is short");
                        assert_eq!(
                            Some(&next),
                            page.clusters.last().map(|c| cursor_of(c)).as_ref()
                        );
                        cursor = Some(next);
                    }
                    None => break,
                }
            }
            assert_eq!(listed, expected, "{filter:?}, limit {limit}");
        }
    }
    // Pages hold whole records.
    let first = store
        .clusters_page(&filters[1], 1, None)
        .unwrap()
        .clusters
        .remove(0);
    assert_eq!(Some(&*first), all.iter().find(|c| c.id == first.id));

    // Empty pages: nothing matches, a cursor past the end, a limit of 0.
    let none = store.clusters_page(&filters[7], 10, None).unwrap();
    assert!(none.clusters.is_empty() && none.next.is_none());
    let end = format!("9999-12-31T23:59:59.999Z_{}", ClusterId::generate());
    let past = store
        .clusters_page(&ListFilter::default(), 10, Some(&end))
        .unwrap();
    assert!(past.clusters.is_empty() && past.next.is_none());
    let zero = store
        .clusters_page(&ListFilter::default(), 0, None)
        .unwrap();
    assert!(zero.clusters.is_empty() && zero.next.is_none());
    // A cursor of a cluster that is gone still says where to go on.
    let (gone, after) = (&all[all.len() - 2], &all[all.len() - 1]);
    assert!(store.purge_cluster(gone.id, &|_| true).unwrap());
    let page = store
        .clusters_page(&ListFilter::default(), 10, Some(&cursor_of(gone)))
        .unwrap();
    let ids: Vec<ClusterId> = page.clusters.iter().map(|c| c.id).collect();
    assert_eq!(ids, [after.id]);

    // A cursor that `cursor_of` cannot have made is an error.
    let id = ClusterId::generate();
    for bad in [
        String::new(),
        "garbage".to_string(),
        format!("_{id}"),
        "2026-01-01T00:00:00.000Z_not-a-uuid".to_string(),
        format!("2026-01-01T00:00:00.000Z_{}", id.to_string().to_uppercase()),
        format!("2026-01-01T00:00:00.000Z_{}", id.0.simple()),
    ] {
        assert!(
            matches!(
                store.clusters_page(&ListFilter::default(), 10, Some(&bad)),
                Err(StoreError::BadCursor(_))
            ),
            "{bad:?}"
        );
    }
}

/// Creates, status updates of clusters and nodes, node changes and purges in a mix: the
/// kept counts follow each step.
pub fn mixed_sequence(store: &dyn Store) {
    if store.product(&name("mx"), &name("1")).unwrap().is_none() {
        store.create_product(&product("mx", "1")).unwrap();
    }
    let mut ids = Vec::new();
    for i in 0..6 {
        let c = cluster_of(
            if i % 2 == 0 { "alice" } else { "bob" },
            "mx",
            "1",
            &format!("2026-09-01T00:00:{i:02}.000Z"),
        );
        store.create_cluster(c.clone()).unwrap();
        ids.push(c.id);
    }
    assert_counts(store);
    let statuses = [NodeStatus::Staging, NodeStatus::Running, NodeStatus::Failed];
    for (i, id) in ids.iter().enumerate() {
        store
            .update_cluster(*id, &mut |c| {
                c.nodes[i % 2].observed.status = statuses[i % 3];
                if i % 3 == 0 {
                    c.status = ClusterStatus::Ready;
                }
                if i == 4 {
                    c.nodes.pop();
                }
                Ok(Update::Write)
            })
            .unwrap();
        assert_counts(store);
    }
    let mut more = |c: &mut Cluster| -> Result<Update, String> {
        let mut n = c.nodes[0].clone();
        n.name = name("extra");
        n.observed.status = NodeStatus::Lost;
        // Amounts whose sums a float cannot hold exactly.
        n.cpu = 0.1;
        n.mem = 0.7;
        c.nodes.push(n);
        c.status = ClusterStatus::Healing;
        Ok(Update::Write)
    };
    let mut fail = |c: &mut Cluster| -> Result<Update, String> {
        c.status = ClusterStatus::Failed;
        Ok(Update::Write)
    };
    let mut batch: [BatchUpdate<'_>; 2] = [(ids[1], &mut more), (ids[2], &mut fail)];
    let results = store.update_clusters(&mut batch);
    assert!(results.iter().all(Result::is_ok));
    assert_counts(store);
    assert!(store.purge_cluster(ids[0], &|_| true).unwrap());
    assert!(!store.purge_cluster(ids[3], &|_| false).unwrap());
    assert_counts(store);
}

/// Readers racing writers that change every node (and add and remove one) never see a mix
/// of two commits, nor a node its cluster does not name.
fn reads_are_consistent(store: &dyn Store) {
    use std::sync::atomic::{AtomicBool, Ordering};
    store.create_product(&product("rc", "1")).unwrap();
    let c = cluster("rc", "1", "2026-05-02T00:00:00.000Z");
    store.create_cluster(c.clone()).unwrap();
    let done = AtomicBool::new(false);
    let check = |c: &Cluster| {
        assert!(
            c.nodes
                .iter()
                .all(|n| u64::from(n.observed.attempt) + 1 == c.generation),
            "a torn read: generation {}, nodes {:?}",
            c.generation,
            c.nodes
                .iter()
                .map(|n| n.observed.attempt)
                .collect::<Vec<_>>()
        );
    };
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !done.load(Ordering::SeqCst) {
                    check(&store.cluster(c.id).unwrap().unwrap());
                    for c in store.clusters().unwrap().iter().filter(|o| o.id == c.id) {
                        check(c);
                    }
                }
            });
        }
        s.spawn(|| {
            for i in 0..100 {
                store
                    .update_cluster(c.id, &mut |c| {
                        c.generation += 1;
                        if i % 2 == 0 {
                            let mut t = c.nodes[0].clone();
                            t.name = name("t");
                            c.nodes.push(t);
                        } else {
                            c.nodes.retain(|n| n.name.as_str() != "t");
                        }
                        for n in &mut c.nodes {
                            n.observed.attempt = u32::try_from(c.generation - 1).unwrap();
                        }
                        Ok(Update::Write)
                    })
                    .unwrap();
            }
            done.store(true, Ordering::SeqCst);
        });
    });
    let last = store.cluster(c.id).unwrap().unwrap();
    check(&last);
    assert_eq!(last.generation, 101);
    assert_eq!(last.nodes.len(), 2);
}

/// Every product write moves the catalog generation once it is visible; reads, cluster
/// writes and refused product writes do not.
fn catalog_generations(store: &dyn Store) {
    let now = Timestamp("2026-03-01T00:00:00.000Z".into());
    let (n, v) = (name("gen"), name("1"));
    let mut last = store.catalog_generation();
    let mut moved = |what: &str, expect: bool| {
        let g = store.catalog_generation();
        assert_eq!(g > last, expect, "{what}: generation {last} → {g}");
        assert!(g >= last, "{what}: the generation never goes back");
        last = g;
    };
    store.create_product(&product("gen", "1")).unwrap();
    moved("create", true);
    assert!(store.create_product(&product("gen", "1")).is_err());
    moved("a refused create", false);
    store.product(&n, &v).unwrap();
    store.part(&n, &v, Part::Template).unwrap();
    moved("reads", false);
    store.put_part(&n, &v, Part::Template, b"{}", &now).unwrap();
    moved("a part", true);
    assert_eq!(
        store.part(&n, &v, Part::Template).unwrap().as_deref(),
        Some(&b"{}"[..]),
        "the part is readable once the generation moved"
    );
    let p = product("gen", "1");
    store.put_bundle(&p, &[(Part::Options, b"{}")]).unwrap();
    moved("a bundle", true);
    let c = cluster("gen", "1", "2026-03-01T00:00:00.000Z");
    store.create_cluster(c.clone()).unwrap();
    moved("a cluster", false);
    assert!(
        store
            .delete_product(&n, &v, &|_| Err("in use".into()))
            .is_err()
    );
    moved("a refused delete", false);
    assert!(store.purge_cluster(c.id, &|_| true).unwrap());
    store.delete_product(&n, &v, &|_| Ok(())).unwrap();
    moved("a delete", true);
}
