"""Compatibility tests for a ChromaDB v2 HTTP API server, driven ONLY through the
real client libraries (chromadb==1.5.9, langchain-chroma) plus a few raw HTTP
requests (httpx, which chromadb itself depends on) for wire details the client
hides.

Every assertion here was observed against a real Chroma 1.5.9 server
(`chroma run`, the Rust frontend), and the suite passes against it as well as
against Glimpse (`tests/tests/e2e_chroma.rs` runs it in CI).  Where Chroma
behaves in a way that is not promised by its docs (e.g. the order of `get()`
results when ids are given) the assertions are order-independent.  Where
Glimpse differs on purpose (see docs/chroma.md, "What differs"), the test
checks Glimpse's documented behaviour when `CHROMA_SERVER=glimpse`.

Environment:
    CHROMA_HOST   server host (required)
    CHROMA_PORT   server port (required)
    CHROMA_TOKEN  optional; when set every client authenticates with it, and
                  the auth tests run (a client without the token must get
                  chromadb.errors.ChromaAuthError on a write).
    CHROMA_TOKEN_HEADER  optional, "Authorization" (default; sent as
                  "Authorization: Bearer <token>") or "X-Chroma-Token".
    CHROMA_SERVER optional; "glimpse" when the server is Glimpse.

Run:
    CHROMA_HOST=127.0.0.1 CHROMA_PORT=8000 python -m pytest -q tests/chroma
"""

from __future__ import annotations

import os
import re
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence

import httpx
import numpy as np
import pytest

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import chromadb  # noqa: E402
from chromadb.config import Settings  # noqa: E402
from chromadb.errors import (  # noqa: E402
    ChromaAuthError,
    ChromaError,
    InvalidArgumentError,
    NotFoundError,
)

HOST = os.environ.get("CHROMA_HOST")
PORT = os.environ.get("CHROMA_PORT")
TOKEN = os.environ.get("CHROMA_TOKEN") or None
TOKEN_HEADER = os.environ.get("CHROMA_TOKEN_HEADER", "Authorization")
GLIMPSE = os.environ.get("CHROMA_SERVER") == "glimpse"

pytestmark = pytest.mark.skipif(
    not (HOST and PORT), reason="set CHROMA_HOST and CHROMA_PORT to run the Chroma API tests"
)

BASE = f"http://{HOST}:{PORT}/api/v2"
DT = "default_tenant"
DD = "default_database"

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def make_settings(token: Optional[str] = TOKEN) -> Settings:
    kw: Dict[str, Any] = {"anonymized_telemetry": False}
    if token:
        kw.update(
            chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
            chroma_client_auth_credentials=token,
            chroma_auth_token_transport_header=TOKEN_HEADER,
        )
    return Settings(**kw)


def make_client(tenant: str = DT, database: str = DD, token: Optional[str] = TOKEN):
    return chromadb.HttpClient(
        host=HOST, port=int(PORT), settings=make_settings(token), tenant=tenant, database=database
    )


def auth_headers(token: Optional[str] = TOKEN) -> Dict[str, str]:
    if not token:
        return {}
    if TOKEN_HEADER.lower() == "authorization":
        return {"Authorization": f"Bearer {token}"}
    return {TOKEN_HEADER: token}


def raw(method: str, path: str, json: Any = None, token: Optional[str] = TOKEN, **kw) -> httpx.Response:
    return httpx.request(method, BASE + path, json=json, headers=auth_headers(token), timeout=60, **kw)


def uname(prefix: str = "t") -> str:
    # Chroma names: 3-512 chars of [a-zA-Z0-9._-], starting/ending alnum.
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def assert_vecs_equal(got, expected) -> None:
    """Embeddings come back as the float32 values that were stored."""
    g = f32(np.asarray(got, dtype=np.float64))
    assert g.shape == f32(expected).shape
    assert np.array_equal(g, f32(expected)), (g, f32(expected))


def cosine_dist(a, b) -> float:
    a = f32(a).astype(np.float64)
    b = f32(b).astype(np.float64)
    return float(1.0 - a.dot(b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def l2_dist(a, b) -> float:  # Chroma's "l2" is the SQUARED euclidean distance
    d = f32(a).astype(np.float64) - f32(b).astype(np.float64)
    return float(d.dot(d))


def ip_dist(a, b) -> float:
    return float(1.0 - f32(a).astype(np.float64).dot(f32(b).astype(np.float64)))


DIST = {"cosine": cosine_dist, "l2": l2_dist, "ip": ip_dist}


def by_id(res: Dict[str, Any], field: str) -> Dict[str, Any]:
    return dict(zip(res["ids"], res[field]))


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def client():
    return make_client()


@pytest.fixture
def new_col(client):
    """Factory: create a uniquely named collection (embedding_function=None so
    the client never tries to embed) and delete it afterwards."""
    created: List[str] = []

    def factory(metadata: Optional[Dict[str, Any]] = None, **kw):
        name = uname("col")
        col = client.create_collection(name, metadata=metadata, embedding_function=None, **kw)
        created.append(name)
        return col

    yield factory
    for name in created:
        try:
            client.delete_collection(name)
        except Exception:
            pass


# --------------------------------------------------------------------------
# system routes
# --------------------------------------------------------------------------


def test_heartbeat(client):
    hb = client.heartbeat()
    assert isinstance(hb, int)
    # nanoseconds since epoch, server and tests run on the same host/clock
    assert abs(hb - time.time_ns()) < 3600 * 10**9
    r = raw("GET", "/heartbeat", token=None)  # heartbeat never needs auth
    assert r.status_code == 200
    assert set(r.json().keys()) == {"nanosecond heartbeat"}
    assert isinstance(r.json()["nanosecond heartbeat"], int)


def test_version(client):
    v = client.get_version()
    assert isinstance(v, str)
    assert re.match(r"^\d+\.\d+\.\d+", v)
    r = raw("GET", "/version")
    assert r.status_code == 200 and r.json() == v


def test_pre_flight_checks(client):
    r = raw("GET", "/pre-flight-checks")
    assert r.status_code == 200
    pf = r.json()
    assert isinstance(pf["max_batch_size"], int) and pf["max_batch_size"] > 0
    if "supports_base64_encoding" in pf:
        assert isinstance(pf["supports_base64_encoding"], bool)
    # the client caches exactly that answer and uses it for batching limits
    assert client.get_max_batch_size() == pf["max_batch_size"]


def test_identity_and_default_tenant_database(client):
    ident = client.get_user_identity()
    assert isinstance(ident.databases, list)
    r = raw("GET", f"/tenants/{DT}")
    assert r.status_code == 200 and r.json()["name"] == DT
    r = raw("GET", f"/tenants/{DT}/databases/{DD}")
    assert r.status_code == 200
    db = r.json()
    assert db["name"] == DD and db["tenant"] == DT
    uuid.UUID(db["id"])


def test_client_sends_json_and_user_agent(client):
    headers = client._server.get_request_headers()
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("Chroma Python Client v1.5.9")


# --------------------------------------------------------------------------
# collections
# --------------------------------------------------------------------------


def test_create_collection_model_and_json(client, new_col):
    col = new_col(metadata={"hnsw:space": "cosine", "owner": "tests", "n": 3})
    assert isinstance(col.id, uuid.UUID)
    assert col.metadata == {"hnsw:space": "cosine", "owner": "tests", "n": 3}
    assert col.configuration["hnsw"]["space"] == "cosine"
    assert col.tenant == DT and col.database == DD

    r = raw("GET", f"/tenants/{DT}/databases/{DD}/collections/{col.name}")
    assert r.status_code == 200
    j = r.json()
    assert j["id"] == str(col.id)
    assert j["name"] == col.name
    assert j["metadata"] == {"hnsw:space": "cosine", "owner": "tests", "n": 3}
    assert j["tenant"] == DT and j["database"] == DD
    assert isinstance(j["configuration_json"], dict)
    assert j["configuration_json"]["hnsw"]["space"] == "cosine"
    assert "dimension" in j and j["dimension"] is None  # no records yet
    # by-id route
    r2 = raw("GET", f"/tenants/{DT}/databases/{DD}/collections/by-id/{col.id}")
    assert r2.status_code == 200 and r2.json()["name"] == col.name


def test_dimension_is_reported_after_first_add(client, new_col):
    col = new_col()
    col.add(ids=["a"], embeddings=[[1.0, 2.0, 3.0]])
    j = raw("GET", f"/tenants/{DT}/databases/{DD}/collections/{col.name}").json()
    assert j["dimension"] == 3


def test_default_space_is_l2_and_configuration_space(client, new_col):
    col = new_col()
    assert col.configuration["hnsw"]["space"] == "l2"
    col2 = new_col(configuration={"hnsw": {"space": "ip"}})
    assert col2.configuration["hnsw"]["space"] == "ip"
    got = client.get_collection(col2.name, embedding_function=None)
    assert got.configuration["hnsw"]["space"] == "ip"


def test_get_or_create_returns_existing_and_keeps_metadata(client):
    name = uname("goc")
    try:
        c1 = client.get_or_create_collection(name, metadata={"hnsw:space": "cosine", "v": 1}, embedding_function=None)
        c2 = client.get_or_create_collection(name, metadata={"hnsw:space": "cosine", "v": 2}, embedding_function=None)
        c3 = client.get_or_create_collection(name, embedding_function=None)
        assert c1.id == c2.id == c3.id
        # metadata of an existing collection is NOT updated by get_or_create
        assert c2.metadata == {"hnsw:space": "cosine", "v": 1}
        assert c3.metadata == {"hnsw:space": "cosine", "v": 1}
        assert client.count_collections() >= 1
    finally:
        client.delete_collection(name)


def test_get_or_create_with_default_embedding_function(client):
    """What scripts that never pass embedding_function do: the client sends a
    configuration with embedding_function {"type":"known","name":"default"}."""
    name = uname("defef")
    try:
        col = client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"})
        assert col.metadata == {"hnsw:space": "cosine"}
        assert col.configuration["hnsw"]["space"] == "cosine"
        again = client.get_collection(name)
        assert again.id == col.id
        col.add(ids=["x"], embeddings=[[0.6, 0.8]])
        res = col.query(query_embeddings=[[0.6, 0.8]], n_results=1, include=["distances"])
        assert res["ids"] == [["x"]]
        assert res["distances"][0][0] == pytest.approx(0.0, abs=1e-6)
    finally:
        client.delete_collection(name)


def test_create_existing_name_fails(client, new_col):
    col = new_col()
    with pytest.raises(ChromaError) as ei:
        client.create_collection(col.name, embedding_function=None)
    assert not isinstance(ei.value, NotFoundError)
    assert "already exists" in str(ei.value)
    r = raw("POST", f"/tenants/{DT}/databases/{DD}/collections", json={"name": col.name})
    assert r.status_code == 409
    body = r.json()
    assert set(body) == {"error", "message"}
    assert "already exists" in body["message"]


def test_get_missing_collection_is_not_found(client):
    name = uname("missing")
    with pytest.raises(NotFoundError):
        client.get_collection(name, embedding_function=None)
    with pytest.raises(NotFoundError):
        client.delete_collection(name)
    r = raw("GET", f"/tenants/{DT}/databases/{DD}/collections/{name}")
    assert r.status_code == 404
    assert r.json()["error"] == "NotFoundError"
    assert isinstance(r.json()["message"], str)


def test_invalid_collection_names_rejected(client):
    for bad in ["ab", "bad name!", "-leading-dash"]:
        with pytest.raises(InvalidArgumentError):
            client.create_collection(bad, embedding_function=None)


def test_list_and_count_collections(client):
    before = client.count_collections()
    names = [uname("lst") for _ in range(3)]
    try:
        for n in names:
            client.create_collection(n, metadata={"k": n}, embedding_function=None)
        assert client.count_collections() == before + 3
        r = raw("GET", f"/tenants/{DT}/databases/{DD}/collections_count")
        assert r.status_code == 200 and r.json() == before + 3
        listed = client.list_collections()
        by_name = {c.name: c for c in listed}
        for n in names:
            assert n in by_name
            assert by_name[n].metadata == {"k": n}
        assert len(listed) == before + 3
        # pagination is consistent with the full listing
        full = [c.name for c in listed]
        paged = []
        for off in range(len(full)):
            page = client.list_collections(limit=1, offset=off)
            assert len(page) == 1
            paged.append(page[0].name)
        assert paged == full
        assert [c.name for c in client.list_collections(limit=2, offset=1)] == full[1:3]
        assert client.list_collections(limit=5, offset=len(full)) == []
    finally:
        for n in names:
            client.delete_collection(n)
    assert client.count_collections() == before


def test_modify_name_and_metadata(client):
    name, new_name = uname("mod"), uname("mod2")
    col = client.create_collection(name, metadata={"a": 1, "b": "x"}, embedding_function=None)
    try:
        col.add(ids=["r"], embeddings=[[1.0, 0.0]])
        col.modify(name=new_name, metadata={"c": 2})
        assert col.name == new_name
        got = client.get_collection(new_name, embedding_function=None)
        assert got.id == col.id
        # metadata is REPLACED, not merged
        assert got.metadata == {"c": 2}
        assert got.count() == 1
        with pytest.raises(NotFoundError):
            client.get_collection(name, embedding_function=None)
        col.modify(metadata={"d": True})
        assert client.get_collection(new_name, embedding_function=None).metadata == {"d": True}
        # rename only (new_metadata: null) keeps the metadata
        newer = uname("mod3")
        col.modify(name=newer)
        got = client.get_collection(newer, embedding_function=None)
        assert got.metadata == {"d": True} and got.id == col.id
        new_name = newer
    finally:
        client.delete_collection(new_name)


def test_modify_to_existing_name_fails(client, new_col):
    a, b = new_col(), new_col()
    with pytest.raises(ChromaError):
        a.modify(name=b.name)
    assert client.get_collection(a.name, embedding_function=None).id == a.id


def test_delete_collection_and_stale_handle(client):
    name = uname("del")
    col = client.create_collection(name, embedding_function=None)
    col.add(ids=["1"], embeddings=[[1.0]])
    client.delete_collection(name)
    with pytest.raises(NotFoundError):
        client.get_collection(name, embedding_function=None)
    assert name not in [c.name for c in client.list_collections()]
    for op in (
        lambda: col.add(ids=["2"], embeddings=[[1.0]]),
        lambda: col.count(),
        lambda: col.get(),
        lambda: col.query(query_embeddings=[[1.0]], n_results=1),
        lambda: col.upsert(ids=["2"], embeddings=[[1.0]]),
        lambda: col.update(ids=["1"], embeddings=[[2.0]]),
        lambda: col.delete(ids=["1"]),
    ):
        with pytest.raises(NotFoundError):
            op()
    # recreate with same name gives a fresh, empty collection
    col2 = client.create_collection(name, embedding_function=None)
    try:
        assert col2.id != col.id
        assert col2.count() == 0
    finally:
        client.delete_collection(name)


def test_unknown_collection_id(client):
    cid = uuid.uuid4()
    with pytest.raises(NotFoundError):
        client._server._count(cid, tenant=DT, database=DD)
    r = raw("POST", f"/tenants/{DT}/databases/{DD}/collections/{cid}/get", json={})
    assert r.status_code == 404 and r.json()["error"] == "NotFoundError"
    r = raw("GET", f"/tenants/{DT}/databases/{DD}/collections/not-a-uuid/count")
    assert r.status_code == 400 and r.json()["error"] == "InvalidArgumentError"


# --------------------------------------------------------------------------
# records: add / get / count
# --------------------------------------------------------------------------

E3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.70710678]]


def test_add_and_get_everything(new_col):
    col = new_col(metadata={"hnsw:space": "cosine"})
    col.add(
        ids=["a", "b", "c"],
        embeddings=E3,
        metadatas=[{"k": 1, "s": "x", "f": 1.5, "b": True}, {"k": 2}, {"k": 3, "neg": -7}],
        documents=["doc a", "doc b", None],
        uris=["u://a", None, "u://c"],
    )
    assert col.count() == 3
    res = col.get(ids=["a", "b", "c"], include=["embeddings", "metadatas", "documents", "uris"])
    assert sorted(res["ids"]) == ["a", "b", "c"]
    emb = by_id(res, "embeddings")
    for i, rid in enumerate(["a", "b", "c"]):
        assert_vecs_equal(emb[rid], E3[i])
    md = by_id(res, "metadatas")
    assert md["a"] == {"k": 1, "s": "x", "f": 1.5, "b": True}
    assert isinstance(md["a"]["k"], int) and isinstance(md["a"]["b"], bool)
    assert isinstance(md["a"]["f"], float)
    assert md["b"] == {"k": 2}
    assert md["c"] == {"k": 3, "neg": -7}
    assert by_id(res, "documents") == {"a": "doc a", "b": "doc b", "c": None}
    assert by_id(res, "uris") == {"a": "u://a", "b": None, "c": "u://c"}
    assert res["included"] == ["embeddings", "metadatas", "documents", "uris"]


def test_add_without_metadata_or_documents(new_col):
    col = new_col()
    col.add(ids=["x1", "x2"], embeddings=[[1.0, 0.0], [0.0, 1.0]], metadatas=[{"a": 1}, None], documents=[None, "d"])
    col.add(ids=["x3"], embeddings=[[1.0, 1.0]])
    res = col.get(include=["metadatas", "documents", "uris"])
    assert by_id(res, "metadatas") == {"x1": {"a": 1}, "x2": None, "x3": None}
    assert by_id(res, "documents") == {"x1": None, "x2": "d", "x3": None}
    assert by_id(res, "uris") == {"x1": None, "x2": None, "x3": None}


def test_metadata_value_types_roundtrip(new_col):
    col = new_col()
    md = {
        "s": "héllo wörld",
        "empty_s": "",
        "i": 42,
        "big": 2**40,
        "neg": -3,
        "f": 0.125,
        "tiny": 1e-7,
        "t": True,
        "fa": False,
    }
    col.add(ids=["m"], embeddings=[[1.0]], metadatas=[md])
    got = col.get(ids=["m"])["metadatas"][0]
    assert got == md
    for k, v in md.items():
        assert type(got[k]) is type(v), k
    lists = {"li": [1, 2, 3], "ls": ["a", "b"]}
    if GLIMPSE:
        # Glimpse's metadata values are scalars: a list is refused, naming the key, and
        # nothing of the batch is written.
        with pytest.raises(InvalidArgumentError, match="li|ls"):
            col.add(ids=["l"], embeddings=[[1.0]], metadatas=[lists])
        assert col.count() == 1
        return
    col.add(ids=["l"], embeddings=[[1.0]], metadatas=[lists])
    assert col.get(ids=["l"])["metadatas"][0] == lists
    # array metadata supports $contains
    assert col.get(where={"li": {"$contains": 2}}, include=[])["ids"] == ["l"]
    assert col.get(where={"li": {"$contains": 9}}, include=[])["ids"] == []
    assert col.get(where={"ls": {"$contains": "b"}}, include=[])["ids"] == ["l"]
    # Chroma 1.5.9 bug (sqlite backend): array-valued metadata rows are NOT removed
    # by delete_collection and then show up on records of the next collection
    # that reuses the same internal row id.  Deleting the record first avoids
    # polluting the other tests when this suite runs against real Chroma.
    col.delete(ids=["l"])


def test_add_with_none_metadata_value_is_rejected(new_col):
    col = new_col()
    with pytest.raises(ChromaError):
        col.add(ids=["n"], embeddings=[[1.0]], metadatas=[{"n": None, "x": 1}])
    assert col.count() == 0


def test_add_existing_id_is_silently_ignored(new_col):
    col = new_col()
    col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]], metadatas=[{"k": 1}, {"k": 2}], documents=["da", "db"])
    # no error, no replacement, no new record
    col.add(ids=["a"], embeddings=[[9.0, 9.0]], metadatas=[{"k": 99}], documents=["changed"])
    assert col.count() == 2
    res = col.get(ids=["a"], include=["embeddings", "metadatas", "documents"])
    assert res["ids"] == ["a"]
    assert_vecs_equal(res["embeddings"][0], [1.0, 0.0])
    assert res["metadatas"] == [{"k": 1}]
    assert res["documents"] == ["da"]
    # a batch mixing an existing and a new id: new one is added, existing untouched
    col.add(ids=["a", "c"], embeddings=[[5.0, 5.0], [0.5, 0.5]], metadatas=[{"k": 50}, {"k": 3}])
    assert col.count() == 3
    res = col.get(ids=["a", "c"], include=["metadatas"])
    assert by_id(res, "metadatas") == {"a": {"k": 1}, "c": {"k": 3}}


def test_duplicate_ids_in_one_batch_rejected_by_client(new_col):
    col = new_col()
    with pytest.raises(chromadb.errors.DuplicateIDError):
        col.add(ids=["z", "z"], embeddings=[[1.0], [1.0]])


def test_dimension_mismatch(new_col):
    col = new_col()
    col.add(ids=["a"], embeddings=[[1.0, 2.0, 3.0]])
    with pytest.raises(InvalidArgumentError) as ei:
        col.add(ids=["b"], embeddings=[[1.0, 2.0, 3.0, 4.0]])
    assert "dimension" in str(ei.value)
    with pytest.raises(InvalidArgumentError):
        col.upsert(ids=["b"], embeddings=[[1.0, 2.0]])
    with pytest.raises(InvalidArgumentError):
        col.update(ids=["a"], embeddings=[[1.0, 2.0]])
    with pytest.raises(InvalidArgumentError):
        col.query(query_embeddings=[[1.0, 2.0, 3.0, 4.0]], n_results=1)
    assert col.count() == 1
    r = raw(
        "POST",
        f"/tenants/{DT}/databases/{DD}/collections/{col.id}/add",
        json={"ids": ["c"], "embeddings": [[1.0, 2.0]]},
    )
    assert r.status_code == 400
    assert r.json()["error"] == "InvalidArgumentError"
    assert "dimension" in r.json()["message"]


def test_count(new_col):
    col = new_col()
    assert col.count() == 0
    col.add(ids=[f"id{i}" for i in range(7)], embeddings=[[float(i), 1.0] for i in range(7)])
    assert col.count() == 7
    r = raw("GET", f"/tenants/{DT}/databases/{DD}/collections/{col.id}/count")
    assert r.status_code == 200 and r.json() == 7
    col.delete(ids=["id0", "id1"])
    assert col.count() == 5


# --------------------------------------------------------------------------
# upsert / update semantics
# --------------------------------------------------------------------------


def test_upsert_semantics(new_col):
    col = new_col()
    col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]], metadatas=[{"k": 1, "keep": "y"}, {"k": 2}], documents=["doc a", "doc b"])
    # existing "a": embedding replaced, metadata MERGED key-by-key, document replaced
    # new "c": inserted
    col.upsert(ids=["a", "c"], embeddings=[[2.0, 2.0], [3.0, 3.0]], metadatas=[{"k": 10, "new": True}, {"k": 3}], documents=["doc a2", "doc c"])
    assert col.count() == 3
    res = col.get(ids=["a", "b", "c"], include=["embeddings", "metadatas", "documents"])
    emb = by_id(res, "embeddings")
    assert_vecs_equal(emb["a"], [2.0, 2.0])
    assert_vecs_equal(emb["b"], [0.0, 1.0])
    assert_vecs_equal(emb["c"], [3.0, 3.0])
    assert by_id(res, "metadatas") == {"a": {"k": 10, "keep": "y", "new": True}, "b": {"k": 2}, "c": {"k": 3}}
    assert by_id(res, "documents") == {"a": "doc a2", "b": "doc b", "c": "doc c"}
    # upsert without metadatas/documents keeps the old ones, replaces the embedding
    col.upsert(ids=["a"], embeddings=[[4.0, 4.0]])
    res = col.get(ids=["a"], include=["embeddings", "metadatas", "documents"])
    assert_vecs_equal(res["embeddings"][0], [4.0, 4.0])
    assert res["metadatas"] == [{"k": 10, "keep": "y", "new": True}]
    assert res["documents"] == ["doc a2"]
    # upsert with a None value deletes that key of an existing record
    col.upsert(ids=["a"], embeddings=[[4.0, 4.0]], metadatas=[{"keep": None, "z": 1}])
    assert col.get(ids=["a"])["metadatas"] == [{"k": 10, "new": True, "z": 1}]
    # upsert of a new record with a None value: the key is simply absent
    col.upsert(ids=["n"], embeddings=[[1.0, 1.0]], metadatas=[{"gone": None, "b": 2}])
    assert col.get(ids=["n"])["metadatas"] == [{"b": 2}]


def test_update_semantics(new_col):
    col = new_col()
    col.add(
        ids=["a", "b"],
        embeddings=[[1.0, 0.0], [0.0, 1.0]],
        metadatas=[{"k": 1, "s": "x", "f": 1.5}, {"k": 2}],
        documents=["doc a", "doc b"],
        uris=["u://a", None],
    )
    # merge key-by-key; None deletes a key; embedding/document/uri untouched
    col.update(ids=["a"], metadatas=[{"s": "y", "new": 1, "k": None}])
    res = col.get(ids=["a"], include=["embeddings", "metadatas", "documents", "uris"])
    assert res["metadatas"] == [{"s": "y", "f": 1.5, "new": 1}]
    assert_vecs_equal(res["embeddings"][0], [1.0, 0.0])
    assert res["documents"] == ["doc a"]
    assert res["uris"] == ["u://a"]
    # update only the embedding keeps metadata/document
    col.update(ids=["a"], embeddings=[[1.0, 0.25]])
    res = col.get(ids=["a"], include=["embeddings", "metadatas", "documents"])
    assert_vecs_equal(res["embeddings"][0], [1.0, 0.25])
    assert res["metadatas"] == [{"s": "y", "f": 1.5, "new": 1}]
    assert res["documents"] == ["doc a"]
    # update document + uri (with an embedding; a document-only update would
    # make the client compute embeddings itself)
    col.update(ids=["b"], embeddings=[[0.0, 2.0]], documents=["doc b2"], uris=["u://b"])
    res = col.get(ids=["b"], include=["embeddings", "documents", "uris", "metadatas"])
    assert res["documents"] == ["doc b2"] and res["uris"] == ["u://b"]
    assert res["metadatas"] == [{"k": 2}]
    # metadatas=[None] leaves metadata unchanged
    col.update(ids=["b"], metadatas=[None])
    assert col.get(ids=["b"])["metadatas"] == [{"k": 2}]
    # deleting every key leaves an EMPTY dict (not None)
    col.update(ids=["b"], metadatas=[{"k": None}])
    assert col.get(ids=["b"])["metadatas"] == [{}]
    # update of a missing id: no error, nothing inserted
    col.update(ids=["missing"], metadatas=[{"x": 1}])
    assert col.count() == 2
    assert col.get(ids=["missing"])["ids"] == []
    # mixed existing + missing: existing one is updated
    col.update(ids=["a", "missing2"], metadatas=[{"mix": 1}, {"mix": 2}])
    assert col.count() == 2
    res = col.get(ids=["a", "missing2"])
    assert res["ids"] == ["a"]
    assert res["metadatas"] == [{"s": "y", "f": 1.5, "new": 1, "mix": 1}]


def test_update_record_without_metadata(new_col):
    col = new_col()
    col.add(ids=["x"], embeddings=[[1.0, 1.0]])
    assert col.get(ids=["x"])["metadatas"] == [None]
    col.update(ids=["x"], metadatas=[{"q": 1}])
    assert col.get(ids=["x"])["metadatas"] == [{"q": 1}]


# --------------------------------------------------------------------------
# get: include / limit / offset / ordering / peek
# --------------------------------------------------------------------------


def test_get_include_defaults_and_explicit(new_col):
    col = new_col()
    col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]], metadatas=[{"k": 1}, {"k": 2}], documents=["da", "db"], uris=["ua", "ub"])
    res = col.get()
    # default include for get is ["metadatas", "documents"]
    assert res["included"] == ["metadatas", "documents"]
    assert sorted(res["ids"]) == ["a", "b"]
    assert by_id(res, "metadatas") == {"a": {"k": 1}, "b": {"k": 2}}
    assert by_id(res, "documents") == {"a": "da", "b": "db"}
    assert res["embeddings"] is None and res["uris"] is None
    res = col.get(include=[])
    assert sorted(res["ids"]) == ["a", "b"]
    assert res["metadatas"] is None and res["documents"] is None and res["embeddings"] is None and res["uris"] is None
    res = col.get(include=["embeddings"])
    assert res["metadatas"] is None and res["documents"] is None
    emb = by_id(res, "embeddings")
    assert_vecs_equal(emb["a"], [1.0, 0.0])
    res = col.get(include=["uris"])
    assert by_id(res, "uris") == {"a": "ua", "b": "ub"}
    # raw wire: the response echoes "include" and carries null for non-included fields
    r = raw("POST", f"/tenants/{DT}/databases/{DD}/collections/{col.id}/get", json={"ids": ["a"], "include": ["documents"]})
    assert r.status_code == 200
    j = r.json()
    assert j["ids"] == ["a"] and j["documents"] == ["da"]
    assert j["metadatas"] is None and j["embeddings"] is None and j["uris"] is None


def test_get_by_ids_where_and_missing(new_col):
    col = new_col()
    col.add(ids=["e1", "e2", "e3"], embeddings=[[1.0], [2.0], [3.0]], metadatas=[{"g": 1}, {"g": 2}, {"g": 1}])
    res = col.get(ids=["e3", "e1", "nope"])
    assert sorted(res["ids"]) == ["e1", "e3"]  # missing ids are silently skipped
    res = col.get(ids=["e1", "e2", "e3"], where={"g": 1})  # ids AND where
    assert sorted(res["ids"]) == ["e1", "e3"]
    assert col.get(ids=["nope"]) == {
        "ids": [],
        "embeddings": None,
        "metadatas": [],
        "documents": [],
        "data": None,
        "uris": None,
        "included": ["metadatas", "documents"],
    }


def test_get_order_is_insertion_order(new_col):
    """Observed on Chroma 1.5.9 single node: get() without ids returns records in
    insertion order (not id order); upsert/update of existing records does not
    move them; delete + re-add moves a record to the end.  limit/offset page
    over that order."""
    col = new_col()
    col.add(ids=["z", "a", "m"], embeddings=[[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    col.add(ids=["b"], embeddings=[[4.0, 0.0]])
    assert col.get(include=[])["ids"] == ["z", "a", "m", "b"]
    col.upsert(ids=["a"], embeddings=[[2.5, 0.0]])
    col.update(ids=["z"], embeddings=[[1.5, 0.0]])
    # Chroma keeps an updated record in place; Glimpse moves it after the records not
    # written since (its storage is log-structured). Neither is promised by Chroma's docs.
    if GLIMPSE:
        assert col.get(include=[])["ids"] == ["m", "b", "a", "z"]
    else:
        assert col.get(include=[])["ids"] == ["z", "a", "m", "b"]
    col.delete(ids=["m"])
    col.add(ids=["m"], embeddings=[[3.0, 0.0]])
    order = col.get(include=[])["ids"]
    assert order[-1] == "m" and sorted(order) == ["a", "b", "m", "z"]
    if not GLIMPSE:
        assert order == ["z", "a", "b", "m"]
    # limit / offset page over that order
    assert col.get(limit=2, include=[])["ids"] == order[:2]
    assert col.get(offset=2, include=[])["ids"] == order[2:]
    assert col.get(limit=2, offset=1, include=[])["ids"] == order[1:3]
    assert col.get(limit=10, offset=3, include=[])["ids"] == order[3:]
    assert col.get(limit=0, include=[])["ids"] == []
    assert col.get(offset=10, include=[])["ids"] == []


def test_get_limit_offset_pages_cover_everything(new_col):
    col = new_col()
    ids = [f"p{i:03d}" for i in range(25)]
    col.add(ids=ids, embeddings=[[float(i), 0.0] for i in range(25)], metadatas=[{"i": i} for i in range(25)])
    pages = []
    for off in range(0, 25, 10):
        res = col.get(limit=10, offset=off, include=["metadatas"])
        assert len(res["ids"]) == min(10, 25 - off)
        for rid, md in zip(res["ids"], res["metadatas"]):
            assert md == {"i": int(rid[1:])}
        pages += res["ids"]
    assert sorted(pages) == ids and len(set(pages)) == 25
    # limit/offset combine with where
    res = col.get(where={"i": {"$gte": 20}}, limit=3, offset=1, include=[])
    assert len(res["ids"]) == 3
    assert set(res["ids"]) <= {f"p{i:03d}" for i in range(20, 25)}


def test_peek(new_col):
    col = new_col()
    ids = [f"k{i}" for i in range(12)]
    embs = [[float(i), float(-i)] for i in range(12)]
    col.add(ids=ids, embeddings=embs, documents=[f"doc{i}" for i in range(12)])
    res = col.peek()
    assert len(res["ids"]) == 10
    assert res["ids"] == ids[:10]  # insertion order (see test_get_order_is_insertion_order)
    assert res["included"] == ["metadatas", "documents", "embeddings"]
    for rid, e, d in zip(res["ids"], res["embeddings"], res["documents"]):
        i = int(rid[1:])
        assert_vecs_equal(e, embs[i])
        assert d == f"doc{i}"
    assert len(col.peek(limit=3)["ids"]) == 3


# --------------------------------------------------------------------------
# query
# --------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["cosine", "l2", "ip"])
def test_query_distances_match_numpy(new_col, space):
    rng = np.random.default_rng(1234)
    n, dim = 60, 8
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    if space == "ip":
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"v{i}" for i in range(n)]
    col = new_col(metadata={"hnsw:space": space})
    col.add(ids=ids, embeddings=vecs.tolist(), metadatas=[{"i": i} for i in range(n)])
    queries = rng.normal(size=(3, dim)).astype(np.float32)
    k = 5
    res = col.query(query_embeddings=queries.tolist(), n_results=k)
    # default include for query
    assert res["included"] == ["metadatas", "documents", "distances"]
    assert res["embeddings"] is None and res["uris"] is None
    assert len(res["ids"]) == 3 and len(res["distances"]) == 3
    fn = DIST[space]
    for qi, q in enumerate(queries):
        d_all = np.array([fn(q, v) for v in vecs])
        order = np.argsort(d_all, kind="stable")[:k]
        assert res["ids"][qi] == [ids[j] for j in order]
        np.testing.assert_allclose(res["distances"][qi], d_all[order], rtol=1e-4, atol=1e-5)
        assert res["metadatas"][qi] == [{"i": int(j)} for j in order]
        assert res["documents"][qi] == [None] * k


def test_query_distance_hand_computed(new_col):
    # p=[1,2,3], q=[-1,0.5,2], query [0.5,1,-1]
    expected = {
        "cosine": (["p", "q"], [1.0 + 0.5 / (np.sqrt(14) * 1.5), 1.0 + 2.0 / (np.sqrt(5.25) * 1.5)]),
        "l2": (["q", "p"], [11.5, 17.25]),
        "ip": (["p", "q"], [1.5, 3.0]),
    }
    for space, (eids, edists) in expected.items():
        col = new_col(metadata={"hnsw:space": space})
        col.add(ids=["p", "q"], embeddings=[[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])
        res = col.query(query_embeddings=[[0.5, 1.0, -1.0]], n_results=2, include=["distances"])
        assert res["ids"] == [eids], space
        np.testing.assert_allclose(res["distances"][0], edists, rtol=1e-5)
        assert res["metadatas"] is None and res["documents"] is None


def test_query_include_variants(new_col):
    col = new_col()
    col.add(ids=["a", "b", "c"], embeddings=[[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], metadatas=[{"x": 1}, None, {"x": 3}], documents=["da", None, "dc"], uris=["ua", None, None])
    res = col.query(query_embeddings=[[0.0, 0.0]], n_results=3, include=["embeddings", "metadatas", "documents", "uris", "distances"])
    assert res["ids"] == [["a", "b", "c"]]
    assert res["distances"][0] == pytest.approx([0.0, 1.0, 9.0])
    assert res["metadatas"] == [[{"x": 1}, None, {"x": 3}]]
    assert res["documents"] == [["da", None, "dc"]]
    assert res["uris"] == [["ua", None, None]]
    assert_vecs_equal(res["embeddings"][0], [[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    res = col.query(query_embeddings=[[0.0, 0.0]], n_results=2, include=[])
    assert res["ids"] == [["a", "b"]]
    assert res["distances"] is None and res["metadatas"] is None and res["documents"] is None
    assert res["embeddings"] is None and res["uris"] is None


def test_query_n_results_larger_than_count_and_multiple_queries(new_col):
    col = new_col()
    col.add(ids=["a", "b", "c"], embeddings=[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    res = col.query(query_embeddings=[[1.0, 0.0], [0.0, 1.0]], n_results=100, include=["distances"])
    assert res["ids"] == [["a", "b", "c"], ["b", "a", "c"]]
    np.testing.assert_allclose(res["distances"][0], [0.0, 2.0, 5.0], rtol=1e-6)
    np.testing.assert_allclose(res["distances"][1], [0.0, 2.0, 5.0], rtol=1e-6)


def test_query_empty_collection(new_col):
    col = new_col()
    res = col.query(query_embeddings=[[1.0, 0.0]], n_results=3)
    assert res["ids"] == [[]]
    assert res["distances"] == [[]]
    assert res["metadatas"] == [[]]
    assert res["documents"] == [[]]
    res = col.query(query_embeddings=[[1.0, 0.0], [0.0, 1.0]], n_results=3, include=["distances"])
    assert res["ids"] == [[], []] and res["distances"] == [[], []]


def test_query_with_filters(new_col):
    col = new_col()
    col.add(
        ids=["a", "b", "c", "d"],
        embeddings=[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]],
        metadatas=[{"g": 1}, {"g": 2}, {"g": 1}, {"g": 2}],
        documents=["red apple", "green apple", "red car", "blue car"],
    )
    q = [[0.0, 0.0]]
    res = col.query(query_embeddings=q, n_results=10, where={"g": 2}, include=["distances", "metadatas"])
    assert res["ids"] == [["b", "d"]]
    np.testing.assert_allclose(res["distances"][0], [1.0, 9.0])
    assert res["metadatas"] == [[{"g": 2}, {"g": 2}]]
    res = col.query(query_embeddings=q, n_results=10, where_document={"$contains": "car"}, include=["documents"])
    assert res["ids"] == [["c", "d"]] and res["documents"] == [["red car", "blue car"]]
    res = col.query(query_embeddings=q, n_results=1, where={"g": 1}, where_document={"$contains": "car"})
    assert res["ids"] == [["c"]]
    res = col.query(query_embeddings=q, n_results=10, ids=["d", "b"], include=["distances"])
    assert res["ids"] == [["b", "d"]]
    res = col.query(query_embeddings=q, n_results=5, where={"g": 999}, include=["distances", "metadatas"])
    assert res["ids"] == [[]] and res["distances"] == [[]] and res["metadatas"] == [[]]


# --------------------------------------------------------------------------
# where / where_document semantics
# --------------------------------------------------------------------------


@pytest.fixture
def where_col(new_col):
    col = new_col()
    col.add(
        ids=["1", "2", "3", "4", "5"],
        embeddings=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.25], [2.0, 2.0]],
        metadatas=[
            {"color": "red", "n": 1},
            {"color": "blue", "n": 2},
            {"n": 3},  # no "color"
            {"color": "Red", "n": 4.5, "flag": True},
            None,  # no metadata at all
        ],
        documents=["Hello World", "hello there", "goodbye", None, "The Quick brown fox"],
    )
    return col


WHERE_CASES = [
    ({"color": "red"}, {"1"}),
    ({"color": {"$eq": "red"}}, {"1"}),
    ({"color": "RED"}, set()),  # case sensitive
    # $ne / $nin DO match records that lack the key (and records without metadata)
    ({"color": {"$ne": "red"}}, {"2", "3", "4", "5"}),
    ({"color": {"$nin": ["red", "blue"]}}, {"3", "4", "5"}),
    ({"color": {"$in": ["red", "blue"]}}, {"1", "2"}),
    ({"n": {"$gt": 2}}, {"3", "4"}),
    ({"n": {"$gte": 2}}, {"2", "3", "4"}),
    ({"n": {"$lt": 2}}, {"1"}),
    ({"n": {"$lte": 2}}, {"1", "2"}),
    ({"n": {"$gt": 4.4}}, {"4"}),
    ({"n": 2.0}, {"2"}),  # int and float compare numerically
    ({"n": {"$eq": 4.5}}, {"4"}),
    ({"n": {"$ne": 1}}, {"2", "3", "4", "5"}),
    ({"n": {"$in": [1, 3]}}, {"1", "3"}),
    ({"n": {"$nin": [1, 3]}}, {"2", "4", "5"}),
    ({"flag": True}, {"4"}),
    ({"flag": {"$ne": True}}, {"1", "2", "3", "5"}),
    ({"$and": [{"n": {"$gt": 1}}, {"color": "blue"}]}, {"2"}),
    ({"$or": [{"color": "red"}, {"n": 3}]}, {"1", "3"}),
    ({"$or": [{"$and": [{"n": {"$gte": 2}}, {"n": {"$lte": 3}}]}, {"flag": True}]}, {"2", "3", "4"}),
    ({"$and": [{"color": {"$ne": "red"}}, {"n": {"$lt": 4}}]}, {"2", "3"}),
]


@pytest.mark.parametrize("where,expected", WHERE_CASES, ids=[str(w) for w, _ in WHERE_CASES])
def test_where_operators(where_col, where, expected):
    res = where_col.get(where=where, include=["metadatas"])
    assert set(res["ids"]) == expected
    assert len(res["ids"]) == len(expected)
    # where applies to query too
    q = where_col.query(query_embeddings=[[0.0, 0.0]], n_results=10, where=where, include=["distances"])
    assert set(q["ids"][0]) == expected
    assert q["distances"][0] == sorted(q["distances"][0])


def test_where_type_strictness(new_col):
    col = new_col()
    col.add(
        ids=["i1", "f1", "b1", "s1", "none"],
        embeddings=[[1.0]] * 5,
        metadatas=[{"v": 1}, {"v": 1.0}, {"v": True}, {"v": "1"}, {"other": 1}],
    )

    def ids(w):
        return set(col.get(where=w, include=[])["ids"])

    assert ids({"v": 1}) == {"i1", "f1"}
    assert ids({"v": 1.0}) == {"i1", "f1"}
    assert ids({"v": True}) == {"b1"}  # bool is not a number
    assert ids({"v": "1"}) == {"s1"}
    assert ids({"v": {"$ne": 1}}) == {"b1", "s1", "none"}
    assert ids({"v": {"$gte": 1}}) == {"i1", "f1"}
    assert ids({"v": {"$lt": 5}}) == {"i1", "f1"}
    assert ids({"v": {"$nin": [1]}}) == {"b1", "s1", "none"}
    assert ids({"v": {"$in": [True]}}) == {"b1"}
    assert ids({"v": {"$ne": True}}) == {"i1", "f1", "s1", "none"}
    assert ids({"v": {"$ne": "1"}}) == {"i1", "f1", "b1", "none"}


WHERE_DOC_CASES = [
    ({"$contains": "hello"}, {"2"}),  # case sensitive
    ({"$contains": "Hello"}, {"1"}),
    ({"$contains": "o"}, {"1", "2", "3", "5"}),
    ({"$not_contains": "hello"}, {"1", "3", "4", "5"}),  # None document matches $not_contains
    ({"$regex": "^h.*e$"}, {"2"}),
    ({"$regex": "[Qq]uick"}, {"5"}),
    ({"$not_regex": "o"}, {"4"}),
    ({"$and": [{"$contains": "o"}, {"$not_contains": "World"}]}, {"2", "3", "5"}),
    ({"$or": [{"$contains": "World"}, {"$contains": "bye"}]}, {"1", "3"}),
]


@pytest.mark.parametrize("wd,expected", WHERE_DOC_CASES, ids=[str(w) for w, _ in WHERE_DOC_CASES])
def test_where_document_operators(where_col, wd, expected):
    res = where_col.get(where_document=wd, include=["documents"])
    assert set(res["ids"]) == expected and len(res["ids"]) == len(expected)


def test_where_and_where_document_combined(where_col):
    res = where_col.get(where={"n": {"$lte": 3}}, where_document={"$contains": "o"}, include=[])
    assert set(res["ids"]) == {"1", "2", "3"}


def test_invalid_where_rejected(where_col, client):
    # client-side validation
    with pytest.raises(ValueError):
        where_col.get(where={"color": {"$foo": 1}})
    with pytest.raises(ValueError):
        where_col.get(where={"n": {"$gt": "a"}})
    # bypassing client validation, the server answers InvalidArgumentError (400)
    with pytest.raises(InvalidArgumentError):
        client._server._get(where_col.id, where={"color": {"$foo": 1}}, tenant=DT, database=DD)
    with pytest.raises(InvalidArgumentError):
        client._server._get(where_col.id, where={"n": {"$gt": "a"}}, tenant=DT, database=DD)
    r = raw("POST", f"/tenants/{DT}/databases/{DD}/collections/{where_col.id}/get", json={"where": {"color": {"$foo": 1}}})
    assert r.status_code == 400
    assert r.json()["error"] == "InvalidArgumentError"


# --------------------------------------------------------------------------
# delete
# --------------------------------------------------------------------------


def test_delete_by_ids_where_and_document(where_col):
    col = where_col
    assert col.delete(ids=["1", "2"]) == {"deleted": 2}
    assert set(col.get(include=[])["ids"]) == {"3", "4", "5"}
    assert col.delete(where={"n": 3}) == {"deleted": 1}
    assert set(col.get(include=[])["ids"]) == {"4", "5"}
    assert col.delete(where_document={"$contains": "Quick"}) == {"deleted": 1}
    assert col.get(include=[])["ids"] == ["4"]
    assert col.delete(where={"n": 12345}) == {"deleted": 0}
    assert col.count() == 1


def test_delete_ids_and_where_intersect(new_col):
    col = new_col()
    col.add(ids=["a", "b", "c"], embeddings=[[1.0], [2.0], [3.0]], metadatas=[{"g": 1}, {"g": 2}, {"g": 1}], documents=["x", "y", "z"])
    assert col.delete(ids=["a", "b"], where={"g": 1}) == {"deleted": 1}
    assert sorted(col.get(include=[])["ids"]) == ["b", "c"]
    assert col.delete(where={"g": 1}, where_document={"$contains": "q"}) == {"deleted": 0}
    assert col.delete(where={"g": 1}, where_document={"$contains": "z"}) == {"deleted": 1}
    assert col.get(include=[])["ids"] == ["b"]


def test_delete_missing_id_is_not_an_error(new_col):
    col = new_col()
    col.add(ids=["a"], embeddings=[[1.0]])
    col.delete(ids=["nonexistent"])  # no exception
    assert col.count() == 1
    with pytest.raises(ValueError):  # client-side: needs ids/where/where_document
        col.delete()


def test_delete_raw_response(new_col):
    col = new_col()
    col.add(ids=["a", "b"], embeddings=[[1.0], [2.0]])
    r = raw("POST", f"/tenants/{DT}/databases/{DD}/collections/{col.id}/delete", json={"ids": ["a"], "where": None, "where_document": None})
    assert r.status_code == 200 and r.json() == {"deleted": 1}


# --------------------------------------------------------------------------
# embeddings on the wire: base64 and float arrays
# --------------------------------------------------------------------------


def _force_base64(client_, flag: bool) -> None:
    pf = dict(client_._server.get_pre_flight_checks())
    pf["supports_base64_encoding"] = flag
    client_._server.pre_flight_checks = pf


@pytest.mark.parametrize("b64", [True, False], ids=["base64", "float-arrays"])
def test_embedding_transport(b64):
    c = make_client()
    _force_base64(c, b64)
    name = uname("b64" if b64 else "flt")
    col = c.create_collection(name, embedding_function=None)
    try:
        # Large but with a squared norm inside f32 (Glimpse refuses vectors whose scores
        # would overflow; see docs/operations.md).
        vecs = [[0.1, -2.5, 3.14159265, 1e-8], [1e15, -0.0, 7.0, 0.3333333]]
        col.add(ids=["a", "b"], embeddings=vecs, metadatas=[{"x": 1}, {"x": 2}])
        col.upsert(ids=["c"], embeddings=[[1.0, 2.0, 3.0, 4.0]])
        col.update(ids=["a"], embeddings=[[0.5, 0.5, 0.5, 0.5]])
        res = col.get(ids=["a", "b", "c"], include=["embeddings"])
        emb = by_id(res, "embeddings")
        assert_vecs_equal(emb["a"], [0.5, 0.5, 0.5, 0.5])
        assert_vecs_equal(emb["b"], vecs[1])
        assert_vecs_equal(emb["c"], [1.0, 2.0, 3.0, 4.0])
        q = col.query(query_embeddings=[[1.0, 2.0, 3.0, 4.0]], n_results=1, include=["distances"])
        assert q["ids"] == [["c"]]
    finally:
        c.delete_collection(name)


def test_numpy_embeddings_accepted(new_col):
    col = new_col(metadata={"hnsw:space": "cosine"})
    arr = np.array([[3.0, 4.0], [4.0, 3.0]], dtype=np.float32)
    col.add(ids=["a", "b"], embeddings=arr)
    res = col.query(query_embeddings=np.array([[3.0, 4.0]], dtype=np.float32), n_results=2, include=["distances", "embeddings"])
    assert res["ids"] == [["a", "b"]]
    np.testing.assert_allclose(res["distances"][0], [0.0, 1 - 24 / 25], atol=1e-6)
    assert_vecs_equal(res["embeddings"][0], arr)


def test_raw_base64_wire_format(new_col):
    """One base64 string per embedding: little-endian float32, standard base64."""
    import base64
    import struct

    col = new_col()
    v = [1.0, -0.5, 0.25]
    s = base64.b64encode(struct.pack("<3f", *v)).decode()
    assert s == "AACAPwAAAL8AAIA+"
    path = f"/tenants/{DT}/databases/{DD}/collections/{col.id}"
    r = raw("POST", path + "/add", json={"ids": ["b64"], "embeddings": [s], "metadatas": None, "documents": None, "uris": None})
    assert r.status_code == 201
    r = raw("POST", path + "/add", json={"ids": ["flt"], "embeddings": [[0.5, 0.5, 0.5]]})
    assert r.status_code == 201
    r = raw("POST", path + "/upsert", json={"ids": ["up"], "embeddings": [[2.0, 0.0, 0.0]]})
    assert r.status_code == 200
    r = raw("POST", path + "/update", json={"ids": ["up"], "embeddings": [base64.b64encode(struct.pack("<3f", 3.0, 0.0, 0.0)).decode()]})
    assert r.status_code == 200
    r = raw("POST", path + "/get", json={"ids": ["b64", "flt", "up"], "include": ["embeddings"]})
    assert r.status_code == 200
    got = dict(zip(r.json()["ids"], r.json()["embeddings"]))
    assert got == {"b64": v, "flt": [0.5, 0.5, 0.5], "up": [3.0, 0.0, 0.0]}
    # query embeddings are always JSON float arrays
    r = raw("POST", path + "/query", json={"query_embeddings": [[1.0, -0.5, 0.25]], "n_results": 1, "include": ["distances"]})
    assert r.status_code == 200
    assert r.json()["ids"] == [["b64"]]
    assert r.json()["distances"] == [[0.0]]
    # invalid base64 -> 400 InvalidArgumentError
    r = raw("POST", path + "/add", json={"ids": ["bad"], "embeddings": ["!!!"]})
    assert r.status_code == 400 and r.json()["error"] == "InvalidArgumentError"


def test_raw_status_codes_and_shapes(new_col):
    col = new_col()
    path = f"/tenants/{DT}/databases/{DD}/collections/{col.id}"
    r = raw("POST", path + "/add", json={"ids": ["a"], "embeddings": [[1.0, 0.0]], "documents": ["d"]})
    assert r.status_code == 201
    r = raw("POST", path + "/get", json={})
    assert r.status_code == 200
    j = r.json()
    assert j["ids"] == ["a"] and j["documents"] == ["d"] and j["metadatas"] == [None]
    assert j["embeddings"] is None
    r = raw("POST", path + "/query", json={"query_embeddings": [[1.0, 0.0]], "n_results": 1})
    assert r.status_code == 200
    j = r.json()
    assert j["ids"] == [["a"]] and j["distances"] == [[0.0]] and j["documents"] == [["d"]]
    r = raw("GET", path + "/count")
    assert r.status_code == 200 and r.json() == 1
    # update may omit embeddings: the document changes, the embedding stays
    r = raw("POST", path + "/update", json={"ids": ["a"], "documents": ["d2"]})
    assert r.status_code == 200
    j = raw("POST", path + "/get", json={"ids": ["a"], "include": ["documents", "embeddings"]}).json()
    assert j["documents"] == ["d2"] and j["embeddings"] == [[1.0, 0.0]]
    r = raw("POST", path + "/add", json={"ids": ["x"], "embeddings": [[1.0, 0.0]], "metadatas": [{"a": 1}, {"b": 2}]})
    assert r.status_code == 400 and r.json()["error"] == "InvalidArgumentError"
    r = raw("PUT", f"/tenants/{DT}/databases/{DD}/collections/{col.id}", json={"new_name": None, "new_metadata": {"z": 1}})
    assert r.status_code == 200
    r = raw("POST", f"/tenants/{DT}/databases/{DD}/collections", json={"name": uname("rawmin")})
    assert r.status_code == 200
    created = r.json()
    assert created["metadata"] is None and created["configuration_json"]["hnsw"]["space"] == "l2"
    r = raw("DELETE", f"/tenants/{DT}/databases/{DD}/collections/{created['name']}")
    assert r.status_code == 200


# --------------------------------------------------------------------------
# tenants & databases
# --------------------------------------------------------------------------


def _admin():
    s = make_settings()
    s.chroma_api_impl = "chromadb.api.fastapi.FastAPI"
    s.chroma_server_host = HOST
    s.chroma_server_http_port = int(PORT)
    return chromadb.AdminClient(s)


def test_tenants_and_databases():
    admin = _admin()
    tenant, db = uname("tn"), uname("db")
    admin.create_tenant(tenant)
    assert admin.get_tenant(tenant)["name"] == tenant
    r = raw("GET", f"/tenants/{tenant}")
    assert r.status_code == 200 and r.json()["name"] == tenant
    with pytest.raises(ChromaError) as ei:
        admin.create_tenant(tenant)
    assert "already exists" in str(ei.value)
    with pytest.raises(NotFoundError):
        admin.get_tenant(uname("nope"))

    assert admin.list_databases(tenant=tenant) == []
    admin.create_database(db, tenant=tenant)
    got = admin.get_database(db, tenant=tenant)
    assert got["name"] == db and got["tenant"] == tenant
    uuid.UUID(str(got["id"]))
    with pytest.raises(ChromaError) as ei:
        admin.create_database(db, tenant=tenant)
    assert "already exists" in str(ei.value)
    assert [d["name"] for d in admin.list_databases(tenant=tenant)] == [db]
    with pytest.raises(NotFoundError):
        admin.get_database(uname("nodb"), tenant=tenant)
    with pytest.raises(NotFoundError):  # databases are per tenant
        admin.get_database(db, tenant=DT)

    # a client bound to tenant/database is isolated from the default namespace
    c = make_client(tenant=tenant, database=db)
    assert c.tenant == tenant and c.database == db
    assert c.count_collections() == 0
    name = uname("iso")
    col = c.create_collection(name, embedding_function=None)
    assert col.tenant == tenant and col.database == db
    col.add(ids=["t"], embeddings=[[1.0, 2.0, 3.0]])
    assert_vecs_equal(col.get(include=["embeddings"])["embeddings"][0], [1.0, 2.0, 3.0])
    assert [x.name for x in c.list_collections()] == [name]
    assert c.count_collections() == 1
    default = make_client()
    with pytest.raises(NotFoundError):
        default.get_collection(name, embedding_function=None)
    # the same name can exist in the default database independently
    dcol = default.create_collection(name, embedding_function=None)
    try:
        assert dcol.id != col.id and dcol.count() == 0
        assert col.count() == 1
    finally:
        default.delete_collection(name)
    r = raw("GET", f"/tenants/{tenant}/databases/{db}/collections/{name}")
    assert r.status_code == 200 and r.json()["tenant"] == tenant and r.json()["database"] == db

    admin.delete_database(db, tenant=tenant)
    with pytest.raises(NotFoundError):
        admin.get_database(db, tenant=tenant)
    assert admin.list_databases(tenant=tenant) == []


def test_client_with_missing_tenant_or_database():
    admin = _admin()
    tenant = uname("tn")
    with pytest.raises(NotFoundError):
        make_client(tenant=uname("nope"), database=DD)
    admin.create_tenant(tenant)
    with pytest.raises(NotFoundError):
        make_client(tenant=tenant, database=uname("nodb"))


def test_short_tenant_and_database_names_rejected():
    """Chroma requires names of >= 3 chars: tenant "t1" / database "d1" are
    rejected with InvalidArgumentError (400)."""
    admin = _admin()
    with pytest.raises(InvalidArgumentError):
        admin.create_tenant("t1")
    tenant = uname("tn")
    admin.create_tenant(tenant)
    with pytest.raises(InvalidArgumentError):
        admin.create_database("d1", tenant=tenant)


# --------------------------------------------------------------------------
# errors -> exception classes (raw shape)
# --------------------------------------------------------------------------


def test_error_json_shape(client):
    r = raw("GET", f"/tenants/{DT}/databases/{DD}/collections/{uname('nope')}")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "message"}
    assert body["error"] in chromadb.errors.error_types
    assert chromadb.errors.error_types[body["error"]] is NotFoundError


# --------------------------------------------------------------------------
# auth (only with CHROMA_TOKEN)
# --------------------------------------------------------------------------

needs_token = pytest.mark.skipif(not TOKEN, reason="CHROMA_TOKEN not set")


@needs_token
def test_auth_token_client_can_write():
    c = make_client()
    headers = c._server.get_request_headers()
    if TOKEN_HEADER.lower() == "authorization":
        assert headers["authorization"] == f"Bearer {TOKEN}"
    else:
        assert headers[TOKEN_HEADER.lower()] == TOKEN
    name = uname("auth")
    col = c.create_collection(name, embedding_function=None)
    try:
        col.add(ids=["1"], embeddings=[[1.0, 2.0]])
        assert col.count() == 1
    finally:
        c.delete_collection(name)


@needs_token
def test_auth_missing_or_wrong_token_is_rejected_on_write():
    # Real Chroma rejects every non-public route (incl. the client's start-up
    # identity check) with 403 {"error":"AuthError","message":"Forbidden"};
    # a server that only protects writes is also accepted, as long as the
    # write fails with ChromaAuthError.
    for bad in (None, "wrong-" + TOKEN):
        with pytest.raises(ChromaAuthError):
            c = make_client(token=bad)
            c.create_collection(uname("noauth"), embedding_function=None)
        r = raw("POST", f"/tenants/{DT}/databases/{DD}/collections", json={"name": uname("noauth")}, token=bad)
        assert r.status_code == 403
        assert r.json() == {"error": "AuthError", "message": "Forbidden"}
    # public routes
    assert raw("GET", "/heartbeat", token=None).status_code == 200


@needs_token
def test_auth_token_via_plain_headers():
    # HttpClient(headers=...) sends the headers verbatim on every request
    c = chromadb.HttpClient(host=HOST, port=int(PORT), headers=auth_headers(), settings=make_settings(token=None))
    name = uname("hdr")
    col = c.create_collection(name, embedding_function=None)
    try:
        col.add(ids=["1"], embeddings=[[1.0]])
        assert col.count() == 1
    finally:
        c.delete_collection(name)


# --------------------------------------------------------------------------
# the original pipeline (build_vectordb.py / serve_vectordb.py)
# --------------------------------------------------------------------------


def test_original_pipeline_build_and_query():
    rng = np.random.default_rng(7)
    n, dim, batch = 1200, 512, 500
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)  # CLIP embeddings are normalized
    name = uname("clip_embeddings")
    c = make_client()
    try:
        # build: get_or_create_collection + add in batches with image_path metadata
        collection = c.get_or_create_collection(name=name, metadata={"hnsw:space": "cosine"})
        for start in range(0, n, batch):
            idx = range(start, min(start + batch, n))
            collection.add(
                ids=[str(i) for i in idx],
                embeddings=[vecs[i] for i in idx],
                metadatas=[{"image_path": f"/images/{i:06d}.jpg"} for i in idx],
            )
        assert collection.count() == n

        # serve: query with include=["metadatas","distances"], similarity = 1 - distance
        collection = c.get_collection(name=name)
        for target in (3, 777, 1199):
            q = vecs[target] + 0.01 * rng.normal(size=dim).astype(np.float32)
            q /= np.linalg.norm(q)
            results = collection.query(query_embeddings=[q.tolist()], n_results=5, include=["metadatas", "distances"])
            assert results["documents"] is None and results["embeddings"] is None
            assert len(results["ids"][0]) == 5
            assert results["ids"][0][0] == str(target)
            paths = [m["image_path"] for m in results["metadatas"][0]]
            assert paths[0] == f"/images/{target:06d}.jpg"
            assert paths == [f"/images/{int(i):06d}.jpg" for i in results["ids"][0]]
            dists = results["distances"][0]
            assert dists == sorted(dists)
            sims = [1 - d for d in dists]
            expected = [float(f32(q).astype(np.float64).dot(vecs[int(i)].astype(np.float64))) for i in results["ids"][0]]
            np.testing.assert_allclose(sims, expected, atol=1e-4)
            assert sims[0] > 0.9
    finally:
        c.delete_collection(name)


# --------------------------------------------------------------------------
# LangChain
# --------------------------------------------------------------------------


class FakeEmbeddings:
    """Tiny deterministic embeddings: bag of letters a..h, plus a bias dim."""

    def _embed(self, text: str) -> List[float]:
        v = [float(text.lower().count(ch)) for ch in "abcdefgh"] + [1.0]
        return v

    def embed_documents(self, texts: List[str]) -> List[List[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> List[float]:
        return self._embed(text)


def _lc_embeddings():
    from langchain_core.embeddings import Embeddings

    class _E(FakeEmbeddings, Embeddings):
        pass

    return _E()


def test_langchain_chroma_roundtrip():
    from langchain_chroma import Chroma

    emb = _lc_embeddings()
    c = make_client()
    name = uname("lc")
    store = Chroma(client=c, collection_name=name, embedding_function=emb, collection_configuration={"hnsw": {"space": "cosine"}})
    try:
        texts = ["abc", "ddd", "aab", "hhh"]
        metas = [{"src": "one", "i": 0}, {"src": "two", "i": 1}, {"src": "three", "i": 2}, {}]
        ids = store.add_texts(texts, metadatas=metas, ids=["id0", "id1", "id2", "id3"])
        assert ids == ["id0", "id1", "id2", "id3"]
        col = c.get_collection(name, embedding_function=None)
        assert col.count() == 4
        assert col.configuration["hnsw"]["space"] == "cosine"

        docs = store.similarity_search_by_vector(emb.embed_query("abc"), k=2)
        assert [d.id for d in docs] == ["id0", "id2"]
        assert docs[0].page_content == "abc" and docs[0].metadata == {"src": "one", "i": 0}
        assert docs[1].page_content == "aab" and docs[1].metadata == {"src": "three", "i": 2}

        scored = store.similarity_search_with_score("ddd", k=4)
        assert [d.id for d, _ in scored][0] == "id1"
        allv = {t: np.array(emb.embed_query(t)) for t in texts}
        qv = np.array(emb.embed_query("ddd"))
        for d, s in scored:
            v = allv[d.page_content]
            assert s == pytest.approx(1 - qv.dot(v) / (np.linalg.norm(qv) * np.linalg.norm(v)), abs=1e-5)
        assert [s for _, s in scored] == sorted(s for _, s in scored)
        hhh = [d for d, _ in scored if d.id == "id3"][0]
        assert hhh.metadata == {}

        rel = store.similarity_search_with_relevance_scores("abc", k=1)
        assert rel[0][0].id == "id0" and rel[0][1] == pytest.approx(1.0, abs=1e-5)

        filtered = store.similarity_search_by_vector(emb.embed_query("abc"), k=4, filter={"src": "two"})
        assert [d.id for d in filtered] == ["id1"]

        got = store.get(ids=["id1"])
        assert got["ids"] == ["id1"] and got["documents"] == ["ddd"] and got["metadatas"] == [{"src": "two", "i": 1}]

        store.delete(ids=["id0", "id1"])
        assert col.count() == 2
        assert sorted(store.get()["ids"]) == ["id2", "id3"]
        docs = store.similarity_search_by_vector(emb.embed_query("abc"), k=4)
        assert [d.id for d in docs][0] == "id2"
        assert "id0" not in [d.id for d in docs]
    finally:
        store.delete_collection()
    with pytest.raises(NotFoundError):
        c.get_collection(name, embedding_function=None)
