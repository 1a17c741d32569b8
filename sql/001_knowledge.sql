-- Knowledge base: documents and their chunks, searchable by meaning (pgvector) and by words (full text).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE documents (
    id            bigserial PRIMARY KEY,
    source        text NOT NULL UNIQUE,          -- file path or record id, the document's identity
    title         text NOT NULL,
    url           text,
    content_hash  text NOT NULL,                 -- sha256 of the parsed text: re-ingest skips unchanged
    -- Visibility: public when both lists are empty; otherwise only in these Slack channels
    -- or to members of these user groups.
    visible_channels text[] NOT NULL DEFAULT '{}',
    visible_groups   text[] NOT NULL DEFAULT '{}',
    metadata      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chunks (
    id           bigserial PRIMARY KEY,
    document_id  bigint NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ord          int NOT NULL,
    heading      text NOT NULL DEFAULT '',       -- heading path, "Laptops > Ordering"
    text         text NOT NULL,                  -- carries the title and heading path
    embedding    vector(384) NOT NULL,
    tsv          tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    UNIQUE (document_id, ord)
);

CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops);
CREATE INDEX chunks_tsv_gin ON chunks USING gin (tsv);
CREATE INDEX chunks_document ON chunks (document_id);

-- Slack user groups as Flywheel knows them (synced from Slack or set by an admin).
CREATE TABLE group_members (
    group_name  text NOT NULL,
    user_id     text NOT NULL,
    PRIMARY KEY (group_name, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);
