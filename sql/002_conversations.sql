-- Every question and what became of it: the records the loop feeds on.
CREATE TABLE answers (
    id              bigserial PRIMARY KEY,
    thread_key      text NOT NULL,              -- the conversation ("slack:C1:1700.1", "cli:…"); also the agent's thread id
    surface         text NOT NULL CHECK (surface IN ('slack', 'cli', 'dashboard', 'eval')),
    user_id         text,
    channel_id      text,
    question        text NOT NULL,
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'pending_review', 'delivered', 'declined', 'rejected', 'failed')),
    route           text CHECK (route IN ('answered', 'review', 'declined')),
    route_reason    text,
    draft           text,
    final_answer    text,
    confidence      real,
    sources         jsonb NOT NULL DEFAULT '[]',    -- [{chunk_id, document_id, title, heading, url, score, dense_score}]
    model           text,
    adapter_id      text,
    prompt_tokens   int,
    completion_tokens int,
    timings         jsonb NOT NULL DEFAULT '{}',    -- seconds per step
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX answers_created ON answers (created_at DESC);
CREATE INDEX answers_thread ON answers (thread_key);

-- Drafts waiting for a human. One per answer; the status changes once.
CREATE TABLE reviews (
    id          bigserial PRIMARY KEY,
    answer_id   bigint NOT NULL UNIQUE REFERENCES answers (id) ON DELETE CASCADE,
    reason      text NOT NULL,                  -- why it needs review
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'edited', 'rejected')),
    decided_by  text,
    decided_at  timestamptz,
    edited_text text,
    reject_reason text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reviews_pending ON reviews (created_at) WHERE status = 'pending';

-- 👍 / 👎 per asker and answer; a later vote replaces the earlier one.
CREATE TABLE feedback (
    id          bigserial PRIMARY KEY,
    answer_id   bigint NOT NULL REFERENCES answers (id) ON DELETE CASCADE,
    user_id     text NOT NULL,
    rating      text NOT NULL CHECK (rating IN ('up', 'down')),
    reason      text CHECK (reason IN ('wrong', 'outdated', 'incomplete', 'unclear', 'other')),
    comment     text,
    suggested_answer text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (answer_id, user_id)
);

-- Outbox: answers decided away from the asker's surface (a review approved in the dashboard or
-- the CLI) wait here until the surface they came from (the Slack bot) posts them.
CREATE TABLE deliveries (
    id          bigserial PRIMARY KEY,
    answer_id   bigint NOT NULL UNIQUE REFERENCES answers (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('answer', 'refusal')),
    text        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX deliveries_pending ON deliveries (created_at) WHERE delivered_at IS NULL;
