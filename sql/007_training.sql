-- Retrain runs: what the worker is doing, for the dashboard and the CLI.
CREATE TABLE training_runs (
    id               bigserial PRIMARY KEY,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    dataset_version  int,
    base_model       text NOT NULL,
    params           jsonb NOT NULL DEFAULT '{}',    -- epochs, rank, lr, ...
    requested_by     text,
    progress         real NOT NULL DEFAULT 0,        -- 0..1
    losses           jsonb NOT NULL DEFAULT '[]',    -- [{step, train_loss, val_loss}]
    metrics          jsonb NOT NULL DEFAULT '{}',    -- eval gate figures
    log              text NOT NULL DEFAULT '',
    adapter_version  int,
    error            text,
    cancel_requested boolean NOT NULL DEFAULT false,
    job_id           bigint,                         -- procrastinate job
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);
CREATE INDEX training_runs_created ON training_runs (created_at DESC);
-- One retrain at a time: at most one run queued or running.
CREATE UNIQUE INDEX training_runs_one_active ON training_runs ((true)) WHERE status IN ('queued', 'running');

CREATE TABLE training_schedule (
    id             int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    enabled        boolean NOT NULL DEFAULT false,
    cron           text NOT NULL DEFAULT '0 3 * * 1',   -- Mondays 03:00
    min_new_examples int NOT NULL DEFAULT 50,
    params         jsonb NOT NULL DEFAULT '{}',
    last_fired_at  timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO training_schedule (id) VALUES (1);
