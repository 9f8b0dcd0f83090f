//! Listing walks (`scan`, `scan_ids`): every live point exactly once across segments and
//! memtables, newest version only, filters applied, pages that add up to the whole.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::{point, small_opts};
use glimpse_storage::{Filter, MetaValue, Metric, Store};

const DIM: usize = 8;

fn tagged(id: &str, version: u64, n: i64) -> glimpse_storage::Point {
    let mut p = point(id, version, DIM);
    p.metadata.insert("n".into(), MetaValue::Int(n));
    p.metadata
        .insert("doc".into(), MetaValue::Str(format!("document number {n}")));
    p
}

#[test]
fn scan_sees_each_live_point_once_with_its_newest_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_opts()).unwrap();
    let c = store.create_collection("s", DIM, Metric::Cosine).unwrap();
    c.upsert((0..30).map(|i| tagged(&format!("p{i:02}"), 1, i)).collect())
        .unwrap();
    c.flush().unwrap();
    // A second segment, then writes that stay in the memtable: a replacement of a row in
    // the first segment, a delete there, and a new id.
    c.upsert(
        (30..40)
            .map(|i| tagged(&format!("p{i:02}"), 1, i))
            .collect(),
    )
    .unwrap();
    c.flush().unwrap();
    c.upsert(vec![tagged("p05", 2, 100), tagged("p40", 1, 40)])
        .unwrap();
    c.delete(&["p07".to_string(), "p33".to_string()]).unwrap();

    let all = c.scan(None, 0, usize::MAX);
    let ids: Vec<&str> = all.iter().map(|p| p.id.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "an id came twice: {ids:?}");
    let expected: BTreeSet<String> = (0..41)
        .filter(|i| *i != 7 && *i != 33)
        .map(|i| format!("p{i:02}"))
        .collect();
    assert_eq!(
        unique,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    let p05 = all.iter().find(|p| p.id == "p05").unwrap();
    assert_eq!(p05.metadata["n"], MetaValue::Int(100));
    assert_eq!(p05.vector, point("p05", 2, DIM).vector);
    assert_eq!(c.scan_ids(None, 0, usize::MAX), ids);

    // Pages of 7 add up to the whole walk, in the same order.
    let mut paged = Vec::new();
    for page in 0.. {
        let got = c.scan_ids(None, page * 7, 7);
        if got.is_empty() {
            break;
        }
        assert!(got.len() <= 7);
        paged.extend(got);
    }
    assert_eq!(paged, ids);
    assert!(c.scan(None, 0, 0).is_empty());
    assert!(c.scan(None, 1_000, 10).is_empty());

    // Filters see the newest metadata only.
    let big = Filter::Range {
        key: "n".into(),
        gt: None,
        gte: Some(35.0),
        lt: None,
        lte: None,
    };
    let got: BTreeSet<String> = c.scan_ids(Some(&big), 0, usize::MAX).into_iter().collect();
    let want: BTreeSet<String> = ["p05", "p35", "p36", "p37", "p38", "p39", "p40"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want);
    let text = Filter::Contains {
        key: "doc".into(),
        needle: "number 12".into(),
    };
    assert_eq!(c.scan_ids(Some(&text), 0, 10), vec!["p12".to_string()]);

    // The same after everything is merged into one segment.
    c.compact().unwrap();
    let after: BTreeSet<String> = c.scan_ids(None, 0, usize::MAX).into_iter().collect();
    assert_eq!(after, expected);
}
