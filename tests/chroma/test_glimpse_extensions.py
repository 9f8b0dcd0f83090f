"""What Glimpse adds to the Chroma API, and the promise that one collection is one
collection whichever API filled it: run only against Glimpse (`CHROMA_SERVER=glimpse`)
with a CLIP model loaded whose output width is `GLIMPSE_TEXT_DIM`
(`tests/tests/e2e_chroma.rs` starts one with the tests' tiny model).
"""

from __future__ import annotations

import os
import uuid

import httpx
import numpy as np
import pytest

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import chromadb  # noqa: E402
from chromadb.config import Settings  # noqa: E402

HOST = os.environ.get("CHROMA_HOST")
PORT = os.environ.get("CHROMA_PORT")
DIM = int(os.environ.get("GLIMPSE_TEXT_DIM", "0"))
TOKEN = os.environ.get("CHROMA_TOKEN") or None

pytestmark = pytest.mark.skipif(
    not (HOST and PORT and os.environ.get("CHROMA_SERVER") == "glimpse" and DIM),
    reason="Glimpse only: set CHROMA_SERVER=glimpse, CHROMA_HOST, CHROMA_PORT, GLIMPSE_TEXT_DIM",
)

ROOT = f"http://{HOST}:{PORT}"
COLLECTIONS = f"{ROOT}/api/v2/tenants/default_tenant/databases/default_database/collections"


def headers():
    return {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}


def client():
    kw = {"anonymized_telemetry": False}
    if TOKEN:
        kw.update(
            chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
            chroma_client_auth_credentials=TOKEN,
        )
    return chromadb.HttpClient(host=HOST, port=int(PORT), settings=Settings(**kw))


@pytest.fixture
def filled():
    """A cosine collection filled through the Chroma client as the original pipeline does:
    ids, embeddings and an `image_path` per record."""
    c = client()
    name = f"pipeline-{uuid.uuid4().hex[:12]}"
    col = c.create_collection(name, metadata={"hnsw:space": "cosine"}, embedding_function=None)
    rng = np.random.default_rng(11)
    vecs = rng.normal(size=(40, DIM)).astype(np.float32)
    ids = [f"img-{i:03d}" for i in range(40)]
    col.add(
        ids=ids,
        embeddings=vecs,
        metadatas=[{"image_path": f"photos/{i}.jpg", "n": i} for i in range(40)],
        documents=[f"photo number {i}" for i in range(40)],
    )
    yield c, col, name, ids
    c.delete_collection(name)


def test_query_texts_are_embedded_by_the_servers_model(filled):
    _, col, name, _ = filled
    r = httpx.post(
        f"{COLLECTIONS}/{col.id}/query",
        json={"query_texts": ["a photo of a cat", "a dog"], "n_results": 5,
              "include": ["distances", "metadatas"]},
        headers=headers(),
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [len(x) for x in body["ids"]] == [5, 5]
    assert body["ids"][0] != body["ids"][1], "two texts, two different rankings"
    # The same text through Glimpse's own text search ranks the same records, and
    # Chroma's cosine distance is 1 - Glimpse's score.
    g = httpx.get(f"{ROOT}/search", params={"q": "a photo of a cat", "k": 5, "collection": name},
                  headers=headers(), timeout=60)
    assert g.status_code == 200, g.text
    results = g.json()["results"]
    assert [x["id"] for x in results] == body["ids"][0]
    for dist, hit in zip(body["distances"][0], results):
        assert abs(dist - (1.0 - hit["score"])) < 1e-5
    # Both at once is refused.
    r = httpx.post(f"{COLLECTIONS}/{col.id}/query",
                   json={"query_texts": ["x"], "query_embeddings": [[0.0] * DIM]},
                   headers=headers(), timeout=60)
    assert r.status_code == 400 and r.json()["error"] == "InvalidArgumentError"


def test_a_chroma_collection_is_a_glimpse_collection(filled):
    _, col, name, ids = filled
    # /v1 sees it under its own name, with the dimension of the first add.
    info = httpx.get(f"{ROOT}/v1/collections/{name}", headers=headers(), timeout=60).json()
    assert info["count"] == len(ids) and info["dim"] == DIM and info["metric"] == "cosine"
    # A point written through /v1 is a record for the Chroma client.
    v = [0.0] * DIM
    v[0] = 1.0
    r = httpx.post(f"{ROOT}/v1/collections/{name}/points",
                   json={"points": [{"id": "from-v1", "vector": v,
                                     "metadata": {"image_path": "photos/v1.jpg"}}]},
                   headers=headers(), timeout=60)
    assert r.status_code < 300, r.text
    assert col.count() == len(ids) + 1
    got = col.get(ids=["from-v1"], include=["metadatas", "embeddings"])
    assert got["metadatas"] == [{"image_path": "photos/v1.jpg"}]
    q = col.query(query_embeddings=[v], n_results=1, include=["distances"])
    assert q["ids"] == [["from-v1"]] and abs(q["distances"][0][0]) < 1e-6
    # Text search hits carry the image path the Chroma client stored, which the page shows.
    g = httpx.get(f"{ROOT}/search", params={"q": "anything", "k": 3, "collection": name},
                  headers=headers(), timeout=60).json()
    assert all(h["image_path"].startswith("photos/") for h in g["results"])


def test_collections_made_through_v1_are_visible_to_the_client():
    name = f"v1-{uuid.uuid4().hex[:12]}"
    r = httpx.post(f"{ROOT}/v1/collections", json={"name": name, "dim": 3, "metric": "l2"},
                   headers=headers(), timeout=60)
    assert r.status_code == 201, r.text
    c = client()
    col = c.get_collection(name)
    assert col.configuration["hnsw"]["space"] == "l2"
    col.add(ids=["a"], embeddings=[[1.0, 2.0, 2.0]])
    q = col.query(query_embeddings=[[0.0, 0.0, 0.0]], n_results=1, include=["distances"])
    assert q["ids"] == [["a"]] and abs(q["distances"][0][0] - 9.0) < 1e-5  # squared L2
    c.delete_collection(name)
    assert httpx.get(f"{ROOT}/v1/collections/{name}", headers=headers(), timeout=60).status_code == 404
