//! The Chroma namespace: tenants, databases and collections with their UUIDs, metadata and
//! configuration, kept in `chroma.json` beside the store's collections.
//!
//! Chroma's model does not fit the engine's one to one: its collections have a UUID, a
//! tenant and a database, metadata of their own, and no dimension until the first add. The
//! engine keeps none of that, so this file does, and every entry names the engine collection
//! (`storage`) that holds its points once it has any. Collections of `default_tenant` /
//! `default_database` use their own name for the engine collection when it is a valid one, so
//! the `/v1` API, the page and `GET /search` see them as they are; other namespaces, and names
//! the engine cannot take, get `c-<uuid>`.
//!
//! Engine collections created outside the Chroma API (`/v1`, `glimpse load`) are adopted into
//! the default database on the next Chroma request ([`Registry::adopt`]), and entries whose
//! engine collection was dropped elsewhere are forgotten.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use glimpse_storage::{Metric, Store, is_valid_collection_name};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The tenant every client starts in.
pub const DEFAULT_TENANT: &str = "default_tenant";
/// The database every client starts in.
pub const DEFAULT_DATABASE: &str = "default_database";
/// The registry file, in the data directory.
/// The namespace file in the data directory.
pub(crate) const FILE_NAME: &str = "chroma.json";
/// Largest registry file read back (a hostile or damaged file must not exhaust memory).
const MAX_FILE_BYTES: u64 = 256 << 20;
/// Most tenants.
pub const MAX_TENANTS: usize = 1_000;
/// Most databases in one tenant.
pub const MAX_DATABASES: usize = 1_000;
/// Most Chroma collections in all (each change rewrites the registry file).
pub const MAX_COLLECTIONS: usize = 10_000;
/// Largest collection metadata or configuration, as JSON.
pub const MAX_COLLECTION_META_BYTES: usize = 64 << 10;

/// Why a registry operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The tenant, database or collection does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A tenant, database or collection of that name exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A name or value Chroma would refuse too.
    #[error("{0}")]
    Invalid(String),
    /// The registry file could not be written or read.
    #[error("chroma registry {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// One Chroma collection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChromaCollection {
    /// Its UUID (what record routes address).
    pub id: Uuid,
    /// Owning tenant.
    pub tenant: String,
    /// Owning database.
    pub database: String,
    /// Its Chroma name (unique within the database).
    pub name: String,
    /// The engine collection that holds its points (created at the first add).
    pub storage: String,
    /// Collection metadata as the client set it (`hnsw:space` and the like included).
    pub metadata: Option<Map<String, Value>>,
    /// `configuration_json` as the client set it.
    pub configuration: Value,
    /// Distance space: `l2` (Chroma's default), `cosine` or `ip`.
    pub space: String,
    /// Whether its engine collection has existed: one missing afterwards was dropped
    /// elsewhere, and the entry goes with it.
    #[serde(default)]
    pub materialized: bool,
}

impl ChromaCollection {
    /// The engine metric of its space.
    pub fn metric(&self) -> Metric {
        space_metric(&self.space)
    }
}

/// The engine metric for a Chroma space name.
pub fn space_metric(space: &str) -> Metric {
    match space {
        "cosine" => Metric::Cosine,
        "ip" => Metric::Dot,
        _ => Metric::L2,
    }
}

/// The Chroma space name for an engine metric.
pub fn metric_space(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "cosine",
        Metric::Dot => "ip",
        Metric::L2 => "l2",
    }
}

/// The file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    /// Tenant → database name → database UUID.
    tenants: BTreeMap<String, BTreeMap<String, Uuid>>,
    collections: Vec<ChromaCollection>,
}

impl Default for Snapshot {
    fn default() -> Self {
        let mut dbs = BTreeMap::new();
        dbs.insert(DEFAULT_DATABASE.to_string(), Uuid::new_v4());
        let mut tenants = BTreeMap::new();
        tenants.insert(DEFAULT_TENANT.to_string(), dbs);
        Self {
            format: 1,
            tenants,
            collections: Vec::new(),
        }
    }
}

/// The persistent Chroma namespace. Every change is written to disk (temporary file, fsync,
/// rename, directory fsync) before the call returns.
pub struct Registry {
    path: PathBuf,
    state: Mutex<Snapshot>,
}

/// What [`Registry::create_collection`] is asked for.
pub struct NewCollection {
    /// Tenant.
    pub tenant: String,
    /// Database.
    pub database: String,
    /// Chroma name.
    pub name: String,
    /// Collection metadata.
    pub metadata: Option<Map<String, Value>>,
    /// `configuration_json`.
    pub configuration: Value,
    /// Distance space.
    pub space: String,
    /// Return an existing collection of that name instead of failing.
    pub get_or_create: bool,
}

impl Registry {
    /// Opens the registry of the store at `dir` (an empty one when there is no file yet).
    pub fn open(dir: &Path) -> Result<Registry, RegistryError> {
        let path = dir.join(FILE_NAME);
        let snapshot = Self::read(&path)?;
        Ok(Registry {
            path,
            state: Mutex::new(snapshot),
        })
    }

    /// Reads the file again (a replica, after a sync replaced it).
    pub fn reload(&self) -> Result<(), RegistryError> {
        let snapshot = Self::read(&self.path)?;
        *self.state.lock() = snapshot;
        Ok(())
    }

    fn read(path: &Path) -> Result<Snapshot, RegistryError> {
        let io = |reason: String| RegistryError::Io {
            path: path.to_path_buf(),
            reason,
        };
        Ok(match fs::metadata(path) {
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                return Err(io(format!("larger than {MAX_FILE_BYTES} bytes")));
            }
            Ok(_) => {
                let bytes = fs::read(path).map_err(|e| io(e.to_string()))?;
                serde_json::from_slice(&bytes).map_err(|e| io(format!("unreadable: {e}")))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
            Err(e) => return Err(io(e.to_string())),
        })
    }

    fn persist(&self, s: &Snapshot) -> Result<(), RegistryError> {
        let io = |e: std::io::Error| RegistryError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(s).map_err(|e| RegistryError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = self
            .path
            .with_file_name(format!("{FILE_NAME}.tmp-{}", std::process::id()));
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }

    /// Runs `f` on the state and writes it back when `f` changed it.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut Snapshot) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut s = self.state.lock();
        let mut next = s.clone();
        let out = f(&mut next)?;
        if serde_json::to_value(&next).ok() != serde_json::to_value(&*s).ok() {
            self.persist(&next)?;
            *s = next;
        }
        Ok(out)
    }

    /// Brings the namespace in line with the engine: adopts engine collections no entry names
    /// (into the default database, under their own name), forgets entries whose engine
    /// collection was dropped elsewhere, and marks entries whose engine collection now exists.
    pub fn adopt(&self, store: &Store) -> Result<(), RegistryError> {
        // The engine is listed under the registry's lock, so a drop done under that lock
        // (`unmaterialize`) is never half seen.
        let mut s = self.state.lock();
        let engine: BTreeMap<String, Metric> = store
            .list()
            .into_iter()
            .map(|c| {
                let metric = Metric::parse(&c.metric).unwrap_or(Metric::L2);
                (c.name, metric)
            })
            .collect();
        let named: BTreeSet<&str> = s.collections.iter().map(|c| c.storage.as_str()).collect();
        let settled = engine.keys().all(|n| named.contains(n.as_str()))
            && s.collections
                .iter()
                .all(|c| c.materialized == engine.contains_key(&c.storage));
        if settled {
            return Ok(());
        }
        let mut next = s.clone();
        next.collections
            .retain(|c| !c.materialized || engine.contains_key(&c.storage));
        for c in &mut next.collections {
            if let Some(m) = engine.get(&c.storage) {
                c.materialized = true;
                c.space = metric_space(*m).to_string();
            }
        }
        for (name, metric) in &engine {
            if next.collections.iter().any(|c| &c.storage == name) {
                continue;
            }
            let taken = next.collections.iter().any(|c| {
                c.tenant == DEFAULT_TENANT && c.database == DEFAULT_DATABASE && &c.name == name
            });
            if taken {
                // A Chroma collection of that name awaits its first add in another engine
                // collection; the engine one stays reachable through `/v1` only.
                continue;
            }
            next.collections.push(ChromaCollection {
                id: Uuid::new_v4(),
                tenant: DEFAULT_TENANT.into(),
                database: DEFAULT_DATABASE.into(),
                name: name.clone(),
                storage: name.clone(),
                metadata: None,
                configuration: Value::Null,
                space: metric_space(*metric).to_string(),
                materialized: true,
            });
        }
        self.persist(&next)?;
        *s = next;
        Ok(())
    }

    /// Whether `tenant` exists.
    pub fn has_tenant(&self, tenant: &str) -> bool {
        self.state.lock().tenants.contains_key(tenant)
    }

    /// Creates a tenant.
    pub fn create_tenant(&self, tenant: &str) -> Result<(), RegistryError> {
        check_name("tenant", tenant)?;
        self.update(|s| {
            if s.tenants.contains_key(tenant) {
                return Err(RegistryError::AlreadyExists(format!(
                    "Tenant {tenant} already exists"
                )));
            }
            if s.tenants.len() >= MAX_TENANTS {
                return Err(RegistryError::Invalid(format!(
                    "there are {MAX_TENANTS} tenants already, the most one server keeps"
                )));
            }
            s.tenants.insert(tenant.to_string(), BTreeMap::new());
            Ok(())
        })
    }

    /// The UUID of a database, or why there is none.
    pub fn database(&self, tenant: &str, database: &str) -> Result<Uuid, RegistryError> {
        let s = self.state.lock();
        let dbs = s
            .tenants
            .get(tenant)
            .ok_or_else(|| RegistryError::NotFound(format!("Tenant [{tenant}] not found")))?;
        dbs.get(database).copied().ok_or_else(|| {
            RegistryError::NotFound(format!(
                "Database [{database}] not found in tenant [{tenant}]"
            ))
        })
    }

    /// Every database of a tenant, by name, with its UUID.
    pub fn databases(&self, tenant: &str) -> Result<Vec<(String, Uuid)>, RegistryError> {
        let s = self.state.lock();
        let dbs = s
            .tenants
            .get(tenant)
            .ok_or_else(|| RegistryError::NotFound(format!("Tenant [{tenant}] not found")))?;
        Ok(dbs.iter().map(|(n, id)| (n.clone(), *id)).collect())
    }

    /// Creates a database in an existing tenant.
    pub fn create_database(&self, tenant: &str, database: &str) -> Result<Uuid, RegistryError> {
        check_name("database", database)?;
        self.update(|s| {
            let dbs = s
                .tenants
                .get_mut(tenant)
                .ok_or_else(|| RegistryError::NotFound(format!("Tenant [{tenant}] not found")))?;
            if dbs.contains_key(database) {
                return Err(RegistryError::AlreadyExists(format!(
                    "Database {database} already exists for tenant {tenant}"
                )));
            }
            if dbs.len() >= MAX_DATABASES {
                return Err(RegistryError::Invalid(format!(
                    "tenant {tenant} has {MAX_DATABASES} databases already, the most one \
                     tenant may have"
                )));
            }
            let id = Uuid::new_v4();
            dbs.insert(database.to_string(), id);
            Ok(id)
        })
    }

    /// Removes a database; returns the engine collections of the Chroma collections it held,
    /// for the caller to drop.
    pub fn delete_database(
        &self,
        tenant: &str,
        database: &str,
    ) -> Result<Vec<String>, RegistryError> {
        self.update(|s| {
            let dbs = s
                .tenants
                .get_mut(tenant)
                .ok_or_else(|| RegistryError::NotFound(format!("Tenant [{tenant}] not found")))?;
            if dbs.remove(database).is_none() {
                return Err(RegistryError::NotFound(format!(
                    "Database [{database}] not found in tenant [{tenant}]"
                )));
            }
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut s.collections)
                .into_iter()
                .partition(|c| c.tenant == tenant && c.database == database);
            s.collections = kept;
            Ok(gone.into_iter().map(|c| c.storage).collect())
        })
    }

    /// Creates a collection (or, with `get_or_create`, returns the existing one of that name).
    /// `engine_taken` says whether an engine collection of a given name exists already.
    pub fn create_collection(
        &self,
        new: NewCollection,
        engine_taken: impl Fn(&str) -> bool,
    ) -> Result<ChromaCollection, RegistryError> {
        check_collection_name(&new.name)?;
        check_size("metadata", &new.metadata)?;
        check_size("configuration", &new.configuration)?;
        self.database(&new.tenant, &new.database)?;
        self.update(|s| {
            if let Some(c) = s.collections.iter().find(|c| {
                c.tenant == new.tenant && c.database == new.database && c.name == new.name
            }) {
                if new.get_or_create {
                    return Ok(c.clone());
                }
                return Err(RegistryError::AlreadyExists(format!(
                    "Collection [{}] already exists",
                    new.name
                )));
            }
            if s.collections.len() >= MAX_COLLECTIONS {
                return Err(RegistryError::Invalid(format!(
                    "there are {MAX_COLLECTIONS} collections already, the most one server keeps"
                )));
            }
            let id = Uuid::new_v4();
            let default_ns = new.tenant == DEFAULT_TENANT && new.database == DEFAULT_DATABASE;
            let storage = if default_ns
                && is_valid_collection_name(&new.name)
                && !engine_taken(&new.name)
                && !s.collections.iter().any(|c| c.storage == new.name)
            {
                new.name.clone()
            } else {
                format!("c-{}", id.simple())
            };
            let c = ChromaCollection {
                id,
                tenant: new.tenant,
                database: new.database,
                name: new.name,
                storage,
                metadata: new.metadata,
                configuration: new.configuration,
                space: new.space,
                materialized: false,
            };
            s.collections.push(c.clone());
            Ok(c)
        })
    }

    /// A collection by UUID.
    pub fn by_id(&self, id: Uuid) -> Option<ChromaCollection> {
        let s = self.state.lock();
        s.collections.iter().find(|c| c.id == id).cloned()
    }

    /// A collection by name within a database.
    pub fn by_name(
        &self,
        tenant: &str,
        database: &str,
        name: &str,
    ) -> Result<ChromaCollection, RegistryError> {
        self.database(tenant, database)?;
        let s = self.state.lock();
        s.collections
            .iter()
            .find(|c| c.tenant == tenant && c.database == database && c.name == name)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(format!("Collection [{name}] does not exist")))
    }

    /// The collections of a database, oldest first.
    pub fn list(
        &self,
        tenant: &str,
        database: &str,
    ) -> Result<Vec<ChromaCollection>, RegistryError> {
        self.database(tenant, database)?;
        let s = self.state.lock();
        Ok(s.collections
            .iter()
            .filter(|c| c.tenant == tenant && c.database == database)
            .cloned()
            .collect())
    }

    /// Renames a collection and replaces its metadata or configuration (each when given).
    pub fn modify(
        &self,
        id: Uuid,
        new_name: Option<String>,
        new_metadata: Option<Map<String, Value>>,
        new_configuration: Option<Value>,
    ) -> Result<ChromaCollection, RegistryError> {
        if let Some(n) = &new_name {
            check_collection_name(n)?;
        }
        check_size("metadata", &new_metadata)?;
        check_size("configuration", &new_configuration)?;
        self.update(|s| {
            let pos = s
                .collections
                .iter()
                .position(|c| c.id == id)
                .ok_or_else(|| {
                    RegistryError::NotFound(format!("Collection [{id}] does not exist"))
                })?;
            if let Some(n) = &new_name {
                let c = &s.collections[pos];
                let clash = s.collections.iter().any(|o| {
                    o.id != id && o.tenant == c.tenant && o.database == c.database && &o.name == n
                });
                if clash {
                    return Err(RegistryError::AlreadyExists(format!(
                        "Collection [{n}] already exists"
                    )));
                }
            }
            let c = &mut s.collections[pos];
            if let Some(n) = new_name {
                c.name = n;
            }
            if let Some(m) = new_metadata {
                c.metadata = Some(m);
            }
            if let Some(cfg) = new_configuration {
                merge_json(&mut c.configuration, cfg);
            }
            Ok(c.clone())
        })
    }

    /// Records that a collection's engine collection exists (created at its first add).
    pub fn set_materialized(&self, id: Uuid) -> Result<(), RegistryError> {
        self.update(|s| {
            if let Some(c) = s.collections.iter_mut().find(|c| c.id == id) {
                c.materialized = true;
            }
            Ok(())
        })
    }

    /// Drops a collection's engine collection with `drop` (when its first add was refused, so
    /// that add does not fix the dimension) and records that it has none, both under the
    /// registry's lock so that [`adopt`](Self::adopt) never sees one without the other.
    /// `drop` says whether it dropped anything (it declines when another add filled the
    /// collection meanwhile).
    pub fn unmaterialize(
        &self,
        id: Uuid,
        drop: impl FnOnce() -> Result<bool, RegistryError>,
    ) -> Result<(), RegistryError> {
        self.update(|s| {
            if drop()?
                && let Some(c) = s.collections.iter_mut().find(|c| c.id == id)
            {
                c.materialized = false;
            }
            Ok(())
        })
    }

    /// Removes a collection by name; returns it so the caller can drop its engine collection.
    pub fn delete_collection(
        &self,
        tenant: &str,
        database: &str,
        name: &str,
    ) -> Result<ChromaCollection, RegistryError> {
        self.database(tenant, database)?;
        self.update(|s| {
            let pos = s
                .collections
                .iter()
                .position(|c| c.tenant == tenant && c.database == database && c.name == name)
                .ok_or_else(|| {
                    RegistryError::NotFound(format!("Collection [{name}] does not exist"))
                })?;
            Ok(s.collections.remove(pos))
        })
    }
}

/// Deep-merges `patch` into `base` (objects key by key, anything else replaced), the way a
/// configuration update only names what changes.
fn merge_json(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge_json(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// Refuses collection metadata or configuration over [`MAX_COLLECTION_META_BYTES`] of JSON.
fn check_size<T: Serialize>(what: &str, value: &T) -> Result<(), RegistryError> {
    let bytes = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if bytes > MAX_COLLECTION_META_BYTES {
        return Err(RegistryError::Invalid(format!(
            "collection {what} is {bytes} bytes of JSON; the limit is \
             {MAX_COLLECTION_META_BYTES}"
        )));
    }
    Ok(())
}

/// Tenant and database names: 3 to 512 characters, as Chroma asks.
fn check_name(what: &str, name: &str) -> Result<(), RegistryError> {
    if !(3..=512).contains(&name.len()) {
        return Err(RegistryError::Invalid(format!(
            "{what} name must be between 3 and 512 characters, got {}",
            name.len()
        )));
    }
    Ok(())
}

/// Chroma's collection name rule: 3 to 512 characters from `[a-zA-Z0-9._-]`, starting and
/// ending with a letter or digit.
fn check_collection_name(name: &str) -> Result<(), RegistryError> {
    let bytes = name.as_bytes();
    let ok = (3..=512).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if !ok {
        let shown: String = name.chars().take(64).collect();
        return Err(RegistryError::Invalid(format!(
            "Validation error: name: Expected a name containing 3-512 characters from \
             [a-zA-Z0-9._-], starting and ending with a character in [a-zA-Z0-9]. Got: {shown}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn new(name: &str, tenant: &str, database: &str) -> NewCollection {
        NewCollection {
            tenant: tenant.into(),
            database: database.into(),
            name: name.into(),
            metadata: None,
            configuration: Value::Null,
            space: "l2".into(),
            get_or_create: false,
        }
    }

    #[test]
    fn survives_reopen_and_namespaces_storage_names() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path()).unwrap();
        let a = r
            .create_collection(new("photos", DEFAULT_TENANT, DEFAULT_DATABASE), |_| false)
            .unwrap();
        assert_eq!(a.storage, "photos");
        r.create_tenant("acme").unwrap();
        r.create_database("acme", "prod").unwrap();
        let b = r
            .create_collection(new("photos", "acme", "prod"), |_| false)
            .unwrap();
        assert_ne!(
            b.storage, "photos",
            "other namespaces never take the plain name"
        );
        assert!(is_valid_collection_name(&b.storage));
        // Dots are Chroma-valid but not engine-valid.
        let d = r
            .create_collection(new("my.docs", DEFAULT_TENANT, DEFAULT_DATABASE), |_| false)
            .unwrap();
        assert!(d.storage.starts_with("c-"));
        let e = r
            .create_collection(new("photos", DEFAULT_TENANT, DEFAULT_DATABASE), |_| false)
            .unwrap_err();
        assert!(matches!(e, RegistryError::AlreadyExists(_)), "{e}");
        drop(r);
        let r = Registry::open(dir.path()).unwrap();
        assert_eq!(r.by_id(a.id).unwrap(), a);
        assert_eq!(r.by_name("acme", "prod", "photos").unwrap(), b);
        assert_eq!(r.list(DEFAULT_TENANT, DEFAULT_DATABASE).unwrap().len(), 2);
        assert!(matches!(
            r.by_name("acme", "nope", "photos"),
            Err(RegistryError::NotFound(_))
        ));
        assert!(matches!(
            r.create_collection(new("x", DEFAULT_TENANT, DEFAULT_DATABASE), |_| false),
            Err(RegistryError::Invalid(_))
        ));
    }

    #[test]
    fn sizes_and_counts_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path()).unwrap();
        let mut n = new("big", DEFAULT_TENANT, DEFAULT_DATABASE);
        let mut m = Map::new();
        m.insert(
            "k".into(),
            Value::String("x".repeat(MAX_COLLECTION_META_BYTES)),
        );
        n.metadata = Some(m);
        assert!(matches!(
            r.create_collection(n, |_| false),
            Err(RegistryError::Invalid(_))
        ));
        // Fill the default tenant without a thousand file writes.
        r.state
            .lock()
            .tenants
            .get_mut(DEFAULT_TENANT)
            .unwrap()
            .extend((1..MAX_DATABASES).map(|i| (format!("db-{i}"), Uuid::new_v4())));
        assert!(matches!(
            r.create_database(DEFAULT_TENANT, "one-more"),
            Err(RegistryError::Invalid(_))
        ));
    }

    #[test]
    fn modify_renames_and_merges_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path()).unwrap();
        let mut n = new("one", DEFAULT_TENANT, DEFAULT_DATABASE);
        n.configuration = serde_json::json!({"hnsw": {"space": "l2", "ef_search": 100}});
        let a = r.create_collection(n, |_| false).unwrap();
        r.create_collection(new("two", DEFAULT_TENANT, DEFAULT_DATABASE), |_| false)
            .unwrap();
        assert!(matches!(
            r.modify(a.id, Some("two".into()), None, None),
            Err(RegistryError::AlreadyExists(_))
        ));
        let m = r
            .modify(
                a.id,
                Some("uno".into()),
                None,
                Some(serde_json::json!({"hnsw": {"ef_search": 200}})),
            )
            .unwrap();
        assert_eq!(m.name, "uno");
        assert_eq!(m.storage, "one", "the engine collection keeps its name");
        assert_eq!(
            m.configuration,
            serde_json::json!({"hnsw": {"space": "l2", "ef_search": 200}})
        );
    }
}
