-- Curation: admins judge answers into training material; accepted items freeze into versioned datasets.

-- One judgement per answer. A later judgement replaces the earlier one until it is frozen into a
-- dataset version (dataset versions never change afterwards).
CREATE TABLE curation_items (
    id            bigserial PRIMARY KEY,
    answer_id     bigint NOT NULL UNIQUE REFERENCES answers (id) ON DELETE CASCADE,
    decision      text NOT NULL CHECK (decision IN ('accepted', 'rejected')),
    question      text NOT NULL,                -- scrubbed of personal data
    ideal_answer  text,                         -- scrubbed; NULL when rejected
    edited        boolean NOT NULL DEFAULT false,
    curated_by    text NOT NULL,
    curated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (decision = 'rejected' OR coalesce(btrim(ideal_answer), '') <> '')
);
CREATE INDEX curation_items_accepted ON curation_items (curated_at) WHERE decision = 'accepted';

-- A dataset version is a snapshot of every accepted item at the time it was made, with the
-- context the answer was drafted from copied in (the knowledge base may change later).
CREATE TABLE datasets (
    version     int PRIMARY KEY,
    created_by  text NOT NULL,
    note        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dataset_items (
    dataset_version  int NOT NULL REFERENCES datasets (version) ON DELETE CASCADE,
    curation_item_id bigint NOT NULL REFERENCES curation_items (id),
    answer_id        bigint NOT NULL,
    question         text NOT NULL,
    answer           text NOT NULL,
    context          jsonb NOT NULL DEFAULT '[]',   -- [{n, title, heading, text}]
    PRIMARY KEY (dataset_version, curation_item_id)
);

-- Who did what, when, from the dashboard (and any other admin surface).
CREATE TABLE audit_log (
    id       bigserial PRIMARY KEY,
    actor    text NOT NULL,
    action   text NOT NULL,
    target   text,
    details  jsonb NOT NULL DEFAULT '{}',
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_at ON audit_log (at DESC);
